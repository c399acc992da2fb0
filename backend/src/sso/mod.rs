//! Single sign-on adapters implementing the domain's `IdentityProvider`.

pub mod oidc;
