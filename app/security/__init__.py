"""Who is calling and what they may present: JWT (:mod:`.jwt`), the refusals a bad token gets
(:mod:`.refusals`), password hashing (:mod:`.passwords`) and policy (:mod:`.credentials`), login
counters (:mod:`.throttle`) and the caller's address behind proxies (:mod:`.client_address`).
It knows no domain: what a token's subject is, and what a role allows, is the auth domain's."""
