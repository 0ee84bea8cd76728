"""Tests of app/domain/vms: the VM API."""
