//! Who joined: each member (a cluster at the root, a worker at its cluster) gets its own
//! credential when it joins with a join token, and proves itself with it from then on. The
//! parent keeps the credential's SHA-256 only (`members.json`, mode 0600); removing a member
//! ends its credential, so it cannot come back without a new join token.

use crate::token::{hex, random_text, sha256, ALPHABET};
use crate::{JoinToken, TrustError, TrustFolder};
use serde::{Deserialize, Serialize};

/// What every member credential starts with (and the format's version).
pub const CREDENTIAL_PREFIX: &str = "edgeiocred1";
const SECRET_LEN: usize = 40;

/// What the parent keeps of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member's id (its cluster id or node id).
    pub id: String,
    /// `cluster` or `worker`.
    pub tier: String,
    /// The SHA-256 of its credential's secret, hexadecimal.
    pub secret_sha256: String,
    /// When it joined, seconds since the epoch.
    pub joined: i64,
    /// The join token it joined with (its id, never its secret).
    pub token: String,
}

impl TrustFolder {
    /// Spends one use of the join token `text` (which must pin this folder's CA and be one of
    /// its tokens, unexpired, with uses left) and saves the count; answers the token's id.
    pub fn spend_join_token(&mut self, text: &str, now: i64) -> Result<String, TrustError> {
        let token: JoinToken = text.parse()?;
        if !token.pins(&self.ca) {
            return Err(TrustError::Refused { id: token.id });
        }
        let record = self
            .tokens
            .iter_mut()
            .find(|r| r.id == token.id)
            .ok_or_else(|| TrustError::Refused {
                id: token.id.clone(),
            })?;
        record.spend(&token.secret, now)?;
        self.save_tokens()?;
        Ok(token.id)
    }

    /// Admits member `id` of `tier`, which joined with token `token_id`: issues its
    /// credential (`edgeiocred1.SECRET`, shown only now) and saves its record, replacing any
    /// earlier one of that id.
    pub fn admit(
        &mut self,
        id: &str,
        tier: &str,
        token_id: &str,
        now: i64,
    ) -> Result<String, TrustError> {
        let secret = random_text(SECRET_LEN)?;
        self.members.retain(|m| m.id != id);
        self.members.push(MemberRecord {
            id: id.to_string(),
            tier: tier.to_string(),
            secret_sha256: hex(&sha256(secret.as_bytes())),
            joined: now,
            token: token_id.to_string(),
        });
        self.save_members()?;
        Ok(format!("{CREDENTIAL_PREFIX}.{secret}"))
    }

    /// Whether `credential` is member `id`'s. Only digests are compared.
    pub fn recognise(&self, id: &str, credential: &str) -> Result<(), TrustError> {
        let refused = || TrustError::Refused { id: id.to_string() };
        let secret = credential
            .trim()
            .strip_prefix(CREDENTIAL_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|s| s.len() == SECRET_LEN && s.bytes().all(|b| ALPHABET.contains(&b)))
            .ok_or_else(|| TrustError::Malformed {
                part: "credential",
                rule: format!(
                    "must be {CREDENTIAL_PREFIX}.SECRET ({SECRET_LEN} lowercase letters or digits)"
                ),
            })?;
        let member = self
            .members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(refused)?;
        if hex(&sha256(secret.as_bytes())) != member.secret_sha256 {
            return Err(refused());
        }
        Ok(())
    }

    /// Removes member `id`: its credential ends now. Answers whether it was a member.
    pub fn remove_member(&mut self, id: &str) -> Result<bool, TrustError> {
        let before = self.members.len();
        self.members.retain(|m| m.id != id);
        if self.members.len() == before {
            return Ok(false);
        }
        self.save_members()?;
        Ok(true)
    }

    /// Ends the join token `id` at once; answers its record, or none when there is no such
    /// token.
    pub fn revoke_join_token(
        &mut self,
        id: &str,
    ) -> Result<Option<crate::TokenRecord>, TrustError> {
        let Some(at) = self.tokens.iter().position(|r| r.id == id) else {
            return Ok(None);
        };
        let record = self.tokens.remove(at);
        self.save_tokens()?;
        Ok(Some(record))
    }

    /// Issues a new join token named `name` with an optional time to live (seconds) and
    /// number of uses, saves its record, and answers it (the only time its secret is seen).
    pub fn issue_join_token(
        &mut self,
        name: &str,
        now: i64,
        ttl_s: Option<i64>,
        uses: Option<u32>,
    ) -> Result<JoinToken, TrustError> {
        let (token, record) = JoinToken::issue(&self.ca, name, now, ttl_s, uses)?;
        self.tokens.push(record);
        self.save_tokens()?;
        Ok(token)
    }
}
