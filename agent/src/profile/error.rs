//! Why a profile was refused or failed, in words that name the profile, the item and the path: the message goes
//! to the controller as the install's detail, where a field tech reads it.

/// A profile refused before anything changed, or an apply that failed and was put back.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{name:?} cannot name a profile: use letters, digits, '.', '_', '+' and '-', not starting with '.'")]
    BadName { name: String },
    #[error("profile {profile}: cannot read {path}: {reason}")]
    Read {
        profile: String,
        path: String,
        reason: String,
    },
    #[error("profile {profile}: {path} is not a valid profile: {reason}")]
    Syntax {
        profile: String,
        path: String,
        reason: String,
    },
    #[error("profile {profile}: {item}: {reason}")]
    Invalid {
        profile: String,
        item: String,
        reason: String,
    },
    #[error("profile {profile}: {item}: {reason}; allowed folders: {allowed}")]
    NotAllowed {
        profile: String,
        item: String,
        reason: String,
        allowed: String,
    },
    #[error("profile {profile}: {item} is already managed by profile {other}")]
    Conflict {
        profile: String,
        item: String,
        other: String,
    },
    #[error("profile {profile}: {item} failed: {reason}; everything the profile changed before it was put back")]
    Failed {
        profile: String,
        item: String,
        reason: String,
    },
    #[error("profile {profile}: {item} failed: {reason}; putting back what it changed before failed too: {rollback}")]
    RollbackFailed {
        profile: String,
        item: String,
        reason: String,
        rollback: String,
    },
    #[error("profile {profile}: cannot keep its state in {path}: {reason}")]
    Store {
        profile: String,
        path: String,
        reason: String,
    },
}

impl ProfileError {
    pub(crate) fn invalid(profile: &str, item: &str, reason: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            profile: profile.to_owned(),
            item: item.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn store(
        profile: &str,
        path: &std::path::Path,
        reason: impl ToString,
    ) -> ProfileError {
        ProfileError::Store {
            profile: profile.to_owned(),
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}
