//! Why an authentication attempt ended the way it did.

use mesh_core::MeshError;

/// The outcome of authenticating one request, also the `outcome` label of
/// the `apimesh.auth.outcomes` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Authenticated.
    Ok,
    /// No credential of an accepted kind.
    Missing,
    /// More than one `Authorization` header, or a credential in two places.
    Ambiguous,
    /// Not a compact JWS: wrong number of parts, bad base64 or JSON.
    Malformed,
    /// Larger than the configured maximum; rejected before decoding.
    TooLarge,
    /// `alg` is `none`, not allowed for the issuer, or not the key's algorithm.
    BadAlgorithm,
    /// `crit` lists an extension apimesh does not implement (RFC 7515 §4.1.11).
    UnsupportedCritical,
    /// `typ` is not the one the issuer requires.
    BadType,
    /// `iss` is missing or not a configured issuer (or not one the route accepts).
    BadIssuer,
    /// No configured key has this `kid` (or no single key fits a token without one).
    UnknownKid,
    /// The signature does not verify.
    BadSignature,
    /// A registered claim is missing or of the wrong type (`exp` not a number…).
    BadClaims,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `aud` does not contain an accepted audience.
    BadAudience,
    /// A required scope is missing.
    InsufficientScope,
    /// A required claim has another value.
    ClaimMismatch,
    /// The API key belongs to no consumer.
    UnknownApiKey,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 18] = [
        Outcome::Ok,
        Outcome::Missing,
        Outcome::Ambiguous,
        Outcome::Malformed,
        Outcome::TooLarge,
        Outcome::BadAlgorithm,
        Outcome::UnsupportedCritical,
        Outcome::BadType,
        Outcome::BadIssuer,
        Outcome::UnknownKid,
        Outcome::BadSignature,
        Outcome::BadClaims,
        Outcome::Expired,
        Outcome::NotYetValid,
        Outcome::BadAudience,
        Outcome::InsufficientScope,
        Outcome::ClaimMismatch,
        Outcome::UnknownApiKey,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Missing => "missing",
            Outcome::Ambiguous => "ambiguous",
            Outcome::Malformed => "malformed",
            Outcome::TooLarge => "too_large",
            Outcome::BadAlgorithm => "bad_algorithm",
            Outcome::UnsupportedCritical => "unsupported_crit",
            Outcome::BadType => "bad_type",
            Outcome::BadIssuer => "bad_issuer",
            Outcome::UnknownKid => "unknown_kid",
            Outcome::BadSignature => "bad_signature",
            Outcome::BadClaims => "bad_claims",
            Outcome::Expired => "expired",
            Outcome::NotYetValid => "not_yet_valid",
            Outcome::BadAudience => "bad_audience",
            Outcome::InsufficientScope => "insufficient_scope",
            Outcome::ClaimMismatch => "claim_mismatch",
            Outcome::UnknownApiKey => "unknown_api_key",
        }
    }

    pub(crate) fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }

    /// A description safe to show the client: it never quotes the token.
    pub fn description(self) -> &'static str {
        match self {
            Outcome::Ok => "authenticated",
            Outcome::Missing => "credentials are required",
            Outcome::Ambiguous => "more than one credential was sent",
            Outcome::Malformed => "the token is malformed",
            Outcome::TooLarge => "the token is too large",
            Outcome::BadAlgorithm => "the token's algorithm is not accepted",
            Outcome::UnsupportedCritical => "the token has an unsupported critical header",
            Outcome::BadType => "the token's type is not accepted",
            Outcome::BadIssuer => "the token's issuer is not accepted",
            Outcome::UnknownKid => "the token's signing key is unknown",
            Outcome::BadSignature => "the token's signature is invalid",
            Outcome::BadClaims => "the token's claims are invalid",
            Outcome::Expired => "the token has expired",
            Outcome::NotYetValid => "the token is not valid yet",
            Outcome::BadAudience => "the token's audience is not accepted",
            Outcome::InsufficientScope => "the token lacks a required scope",
            Outcome::ClaimMismatch => "a required claim does not match",
            Outcome::UnknownApiKey => "the API key is not valid",
        }
    }

    /// Whether the caller is known but not allowed (403) rather than unknown (401).
    pub fn is_forbidden(self) -> bool {
        matches!(self, Outcome::InsufficientScope | Outcome::ClaimMismatch)
    }

    /// Renders the failure as the error the client sees, with an RFC 6750
    /// challenge for the accepted schemes.
    pub(crate) fn to_error(
        self,
        realm: &str,
        bearer: bool,
        api_key: bool,
        missing_scope: Option<&str>,
    ) -> MeshError {
        let description = self.description();
        if self.is_forbidden() {
            let mut challenge = format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\"");
            let mut detail = description.to_owned();
            if let Some(scope) = missing_scope {
                challenge.push_str(&format!(", scope=\"{scope}\""));
                detail = format!("{description}: {scope}");
            }
            return MeshError::Forbidden {
                challenge: bearer.then_some(challenge),
                detail,
            };
        }
        let mut challenges = Vec::with_capacity(2);
        let bearer_error = match self {
            Outcome::Missing => None,
            Outcome::Ambiguous => Some("invalid_request"),
            Outcome::UnknownApiKey => None,
            _ => Some("invalid_token"),
        };
        if bearer {
            challenges.push(match (bearer_error, self) {
                (Some(code), o) if o != Outcome::UnknownApiKey => format!(
                    "Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{description}\""
                ),
                _ => format!("Bearer realm=\"{realm}\""),
            });
        }
        if api_key {
            challenges.push(format!("ApiKey realm=\"{realm}\""));
        }
        MeshError::Unauthenticated {
            bearer_error,
            challenge: (!challenges.is_empty()).then(|| challenges.join(", ")),
            detail: description.to_owned(),
        }
    }
}
