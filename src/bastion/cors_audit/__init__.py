"""`bastion cors-audit`: the CORS behaviour of many endpoints, one verdict per endpoint."""
