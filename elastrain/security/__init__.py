"""Encrypted transport: certificates (`certs`) and the TLS rules of server and client (`transport`).

Nothing is imported here, so that a client command loads `cryptography` only when it makes
certificates.
"""
