// The docs page's Scalar configuration, as a file: the Content-Security-Policy allows scripts from this
// origin only, so the inline script Litestar would write is refused. Scalar's features that need
// scalar.com (its AI agent, MCP and SDK generation, the developer tools' deploy and share, telemetry,
// fonts from its CDN) cannot work on a private network: off.
document.getElementById("api-reference").dataset.configuration = JSON.stringify({
  agent: { disabled: true },
  mcp: { disabled: true },
  showDeveloperTools: "never",
  telemetry: false,
  withDefaultFonts: false,
});
