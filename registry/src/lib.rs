//! kiln-registry: references, auth and the registry client.
