"""Console sign-in with OpenID Connect (Entra ID, Keycloak, Google Workspace, ...):
docs/identity.md."""
