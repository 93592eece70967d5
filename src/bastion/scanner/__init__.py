"""`bastion scan`: an OWASP API Security Top 10 (2023) scanner. It is a client: it never needs
the gateway, and it stays on the target's host."""
