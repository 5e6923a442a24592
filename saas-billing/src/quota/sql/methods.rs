//! The public `*_in` methods of the SQL quota stores and their
//! [`QuotaStore`](crate::quota::QuotaStore) impl, written once.

/// Writes, for a store with `pool` and `clock` fields on database `$db`,
/// the `*_in` methods (each the shared operation of [`super`] on the
/// caller's connection `$conn`), its pool's `acquire` and its
/// [`QuotaStore`](crate::quota::QuotaStore) impl. The docs the backends
/// share are here; `try_consume_in`'s, which say how that database
/// serializes the caller's transaction, come whole from the invocation,
/// and the others' from the invocation are appended to their first
/// paragraph.
macro_rules! quota_methods_in {
    (
        $store:ty, $db:ty, $conn:ty;
        $(#[$try_consume:meta])* fn try_consume_in;
        $(#[$reserve:meta])* fn reserve_in;
        $(#[$commit:meta])* fn commit_in;
        $(#[$release:meta])* fn release_in;
        $(#[$give_back:meta])* fn give_back_in;
        $(#[$used:meta])* fn used_in;
    ) => {
        impl $store {
            $(#[$try_consume])*
            pub async fn try_consume_in(
                &self,
                conn: &mut $conn,
                key: &$crate::quota::QuotaKey,
                amount: u64,
                limit: u64,
            ) -> Result<$crate::quota::Consumption, $crate::BillingError> {
                $crate::quota::sql::try_consume::<$db>(conn, &self.clock, key, amount, limit).await
            }

            #[doc = " [`QuotaStore::reserve`](crate::quota::QuotaStore::reserve) on `conn` (see"]
            #[doc = " [`try_consume_in`](Self::try_consume_in)): the reservation exists"]
            #[doc = " only if the caller's transaction commits."]
            $(#[$reserve])*
            #[doc = ""]
            #[doc = " # Errors"]
            #[doc = " As [`QuotaStore::reserve`](crate::quota::QuotaStore::reserve)."]
            pub async fn reserve_in(
                &self,
                conn: &mut $conn,
                key: &$crate::quota::QuotaKey,
                amount: u64,
                limit: u64,
                ttl: std::time::Duration,
            ) -> Result<$crate::quota::ReserveOutcome, $crate::BillingError> {
                $crate::quota::sql::reserve::<$db>(conn, &self.clock, key, amount, limit, ttl)
                    .await
            }

            #[doc = " [`QuotaStore::commit`](crate::quota::QuotaStore::commit) on `conn` (see"]
            #[doc = " [`try_consume_in`](Self::try_consume_in)): reserve before the"]
            #[doc = " business transaction, commit the reservation inside it; if the"]
            #[doc = " transaction rolls back, the reservation stays uncommitted and its"]
            #[doc = " units go back when it expires (or on"]
            #[doc = " [`QuotaStore::release`](crate::quota::QuotaStore::release))."]
            $(#[$commit])*
            #[doc = ""]
            #[doc = " # Errors"]
            #[doc = " As [`QuotaStore::commit`](crate::quota::QuotaStore::commit)."]
            pub async fn commit_in(
                &self,
                conn: &mut $conn,
                reservation: &$crate::quota::Reservation,
            ) -> Result<(), $crate::BillingError> {
                $crate::quota::sql::commit::<$db>(conn, &self.clock, reservation).await
            }

            #[doc = " [`QuotaStore::release`](crate::quota::QuotaStore::release) on `conn` (see"]
            #[doc = " [`try_consume_in`](Self::try_consume_in))."]
            $(#[$release])*
            #[doc = ""]
            #[doc = " # Errors"]
            #[doc = " As [`QuotaStore::release`](crate::quota::QuotaStore::release)."]
            pub async fn release_in(
                &self,
                conn: &mut $conn,
                reservation: &$crate::quota::Reservation,
            ) -> Result<(), $crate::BillingError> {
                $crate::quota::sql::release::<$db>(conn, reservation).await
            }

            #[doc = " [`QuotaStore::give_back`](crate::quota::QuotaStore::give_back) on `conn` (see"]
            #[doc = " [`try_consume_in`](Self::try_consume_in)): the units go back only"]
            #[doc = " if the caller's transaction commits (a project deleted in it)."]
            $(#[$give_back])*
            #[doc = ""]
            #[doc = " # Errors"]
            #[doc = " As [`QuotaStore::give_back`](crate::quota::QuotaStore::give_back)."]
            pub async fn give_back_in(
                &self,
                conn: &mut $conn,
                key: &$crate::quota::QuotaKey,
                amount: u64,
            ) -> Result<(), $crate::BillingError> {
                $crate::quota::sql::give_back::<$db>(conn, &self.clock, key, amount).await
            }

            #[doc = " [`QuotaStore::used`](crate::quota::QuotaStore::used) on `conn`: what the caller's"]
            #[doc = " transaction sees, its own uncommitted grants included."]
            $(#[$used])*
            #[doc = ""]
            #[doc = " # Errors"]
            #[doc = " As [`QuotaStore::used`](crate::quota::QuotaStore::used)."]
            pub async fn used_in(
                &self,
                conn: &mut $conn,
                key: &$crate::quota::QuotaKey,
            ) -> Result<u64, $crate::BillingError> {
                $crate::quota::sql::used::<$db>(conn, &self.clock, key).await
            }

            async fn acquire(
                &self,
            ) -> Result<sqlx::pool::PoolConnection<$db>, $crate::BillingError> {
                self.pool
                    .acquire()
                    .await
                    .map_err(<$db as $crate::store::sql::dialect::Sql>::error)
            }
        }

        $crate::quota::quota_store_over_connections!($store);
    };
}

pub(crate) use quota_methods_in;
