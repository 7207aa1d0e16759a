"""Staff accounts from a company directory (LDAP, Active Directory): docs/identity.md."""
