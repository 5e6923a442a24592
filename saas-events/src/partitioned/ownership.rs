//! Group membership and partition leases: the broker-neutral contract
//! and the assignment rule.

use async_trait::async_trait;

use crate::error::EventError;

/// What [`Leases::hold`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The member already held it; renewed.
    Renewed,
    /// Free, now the member's. `clean` when the last holder released it
    /// after giving its messages back (not expired, never held).
    Claimed { clean: bool },
    /// Another member holds it.
    Taken,
}

/// Membership of a group and leases on its partitions, kept on the broker.
/// Every record expires after the lease TTL unless refreshed.
#[async_trait]
pub(crate) trait Leases: Send + Sync + 'static {
    /// Records `member` as alive and returns the live members, sorted.
    async fn heartbeat(&self, member: &str) -> Result<Vec<String>, EventError>;

    /// Removes `member` from the live members.
    async fn leave(&self, member: &str) -> Result<(), EventError>;

    /// Claims `partition` for `member` if free, or renews it if held.
    async fn hold(&self, partition: u16, member: &str) -> Result<Hold, EventError>;

    /// Frees `partition` if `member` holds it; `clean` when its messages
    /// were given back first.
    async fn release(&self, partition: u16, member: &str, clean: bool) -> Result<(), EventError>;
}

/// Whether `partition` is `member`'s share among `members` (sorted): the
/// partitions are dealt round the members in turn, so shares differ by at
/// most one partition. `member` counts as live even if missing from the
/// list (its own heartbeat may not be visible yet).
pub(crate) fn is_share(members: &[String], member: &str, partition: u16) -> bool {
    let mut all: Vec<&str> = members.iter().map(String::as_str).collect();
    if let Err(at) = all.binary_search(&member) {
        all.insert(at, member);
    }
    let Some(index) = all.iter().position(|m| *m == member) else {
        return false;
    };
    usize::from(partition) % all.len() == index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_deal_partitions_round_the_members() {
        let members = vec!["a".to_owned(), "b".to_owned()];
        let a: Vec<u16> = (0..5).filter(|&p| is_share(&members, "a", p)).collect();
        let b: Vec<u16> = (0..5).filter(|&p| is_share(&members, "b", p)).collect();
        assert_eq!(a, vec![0, 2, 4]);
        assert_eq!(b, vec![1, 3]);
        // A member not yet listed counts itself in.
        assert!(is_share(&[], "z", 3));
        let c: Vec<u16> = (0..4).filter(|&p| is_share(&members, "c", p)).collect();
        assert_eq!(c, vec![2]);
    }
}
