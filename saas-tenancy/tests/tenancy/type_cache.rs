//! sqlx caches custom type OIDs (and prepared statements) per connection,
//! by bare type name. Schema tenants may each own a type of the same name:
//! one runtime connection serving them in turn must not bind or decode one
//! tenant's values with another tenant's type.

use std::str::FromStr;

use saas_core::TenantContext;
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, ScopeMode, SqlIdent, TenantTable};
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{Strategy, TenantObjectName};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgConnectOptions, PgTypeInfo, PgValueRef};
use sqlx::{AssertSqlSafe, Decode, Encode, Executor, PgConnection, Postgres, Type};

use saas_test_support::{Service, service_url};

/// A value of an enum type called `mood` in whichever schema is in scope,
/// encoded and decoded by name as `#[derive(sqlx::Type)]` would.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mood(String);

impl Type<Postgres> for Mood {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("mood")
    }
}

impl Encode<'_, Postgres> for Mood {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.0.as_str(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Mood {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<&str as Decode<Postgres>>::decode(value)?.to_owned()))
    }
}

/// Creates `mood` with `labels` and a `feelings` table in the tenant's schema.
async fn own_mood_type(env: &PgSandbox, ctx: &TenantContext, labels: &[&str]) {
    let schema = TenantObjectName::for_tenant(ctx.tenant_id()).quoted();
    let labels: Vec<String> = labels.iter().map(|l| format!("'{l}'")).collect();
    env.admin
        .execute(AssertSqlSafe(format!(
            "CREATE TYPE {schema}.mood AS ENUM ({}); \
             CREATE TABLE {schema}.feelings (id bigserial PRIMARY KEY, m {schema}.mood NOT NULL)",
            labels.join(", ")
        )))
        .await
        .unwrap();
}

/// Writes `mood` and reads back every mood: typed bind and typed decode.
async fn round_trip(conn: &mut PgConnection, mood: &Mood) -> Vec<Mood> {
    sqlx::query("INSERT INTO feelings (m) VALUES ($1)")
        .bind(mood.clone())
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT m FROM feelings WHERE m = $1 ORDER BY id")
        .bind(mood.clone())
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

/// A `ScopeMode::Shared` tenancy whose runtime pool has one connection,
/// so every checkout reuses it (or a replacement, if it was closed).
fn one_connection(env: &PgSandbox, url: &str) -> PgTenancy {
    let admin = PgConnectOptions::from_str(url)
        .unwrap()
        .options([("search_path", env.shared_schema.as_str())]);
    let mut config = PgClusterConfig::new(
        env.cluster.clone(),
        admin,
        SqlIdent::new(env.runtime_role.clone()).unwrap(),
    );
    config.max_connections = 1;
    PgTenancy::builder(env.tenancy.catalog().clone())
        .cluster(config)
        .tenant_table(TenantTable::new("notes").unwrap())
        .scope_mode(ScopeMode::Shared)
        .build()
        .unwrap()
}

#[tokio::test]
async fn same_named_types_in_schema_tenants_share_one_connection_safely() {
    let Some(url) = service_url(Service::Postgres, "type_cache::same_named_types") else {
        return;
    };
    let mut env = PgSandbox::new(&url, ScopeMode::Shared).await.unwrap();
    let a = env.tenant("moods-a", Strategy::Schema).await.unwrap();
    let b = env.tenant("moods-b", Strategy::Schema).await.unwrap();
    own_mood_type(&env, &a, &["calm", "tense"]).await;
    own_mood_type(&env, &b, &["sunny", "rainy", "tense"]).await;

    let tenancy = one_connection(&env, &url);

    let turns = [(&a, "calm"), (&b, "sunny"), (&a, "tense"), (&b, "tense")];
    for round in 1..=2 {
        for (ctx, label) in turns {
            let mood = Mood(label.to_owned());
            let mut conn = tenancy.acquire(ctx).await.unwrap();
            let read = round_trip(&mut conn, &mood).await;
            drop(conn);
            let mut tx = tenancy.begin(ctx).await.unwrap();
            let read_in_tx = round_trip(&mut tx, &mood).await;
            tx.commit().await.unwrap();
            // Each turn adds one row through each handle; each tenant sees
            // only its own rows, decoded as its own labels.
            assert_eq!(read.len(), 2 * round - 1, "{}: {label}", ctx.slug());
            assert_eq!(read_in_tx.len(), 2 * round, "{}: {label}", ctx.slug());
            assert!(read.iter().chain(&read_in_tx).all(|m| *m == mood));
        }
    }
    // Ending a failed transaction still empties the caches and succeeds.
    let mut tx = tenancy.begin(&a).await.unwrap();
    round_trip(&mut tx, &Mood("calm".to_owned())).await;
    assert!(tx.execute("SELECT 1/0").await.is_err());
    tx.rollback().await.unwrap();
    let mut tx = tenancy.begin(&b).await.unwrap();
    round_trip(&mut tx, &Mood("rainy".to_owned())).await;
    assert!(tx.execute("SELECT 1/0").await.is_err());
    tx.commit().await.unwrap();
    let mut conn = tenancy.acquire(&a).await.unwrap();
    assert_eq!(
        round_trip(&mut conn, &Mood("calm".to_owned())).await.len(),
        5
    );
    drop(conn);
    drop(tenancy);
    env.cleanup().await;
}

/// The other tenant's turn after `a`'s transaction ended abnormally: its
/// own `mood` binds and decodes on the shared connection (a stale type
/// cache would bind `sunny` as `a`'s `mood`, which has no such label), and
/// `a`'s abandoned write was rolled back.
async fn other_tenant_after(
    env: &PgSandbox,
    tenancy: &PgTenancy,
    a: &TenantContext,
    b: &TenantContext,
    how: &str,
) {
    let sunny = Mood("sunny".to_owned());
    // First plain use of the runtime pool, which empties no cache on
    // checkout: `mood` here is the shared schema's type.
    let pool = tenancy.runtime_pool(&env.cluster).unwrap();
    let echoed: String = sqlx::query_scalar("SELECT $1::text")
        .bind(sunny.clone())
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{how}: the shared schema's mood: {e}"));
    assert_eq!(echoed, "sunny");
    let mut conn = tenancy.acquire(b).await.unwrap();
    let first = round_trip(&mut conn, &sunny).await.len();
    drop(conn);
    let mut tx = tenancy.begin(b).await.unwrap();
    assert_eq!(round_trip(&mut tx, &sunny).await.len(), first + 1, "{how}");
    tx.commit().await.unwrap();
    let mut tx = tenancy.begin(a).await.unwrap();
    let calm: i64 = sqlx::query_scalar("SELECT count(*) FROM feelings")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(calm, 0, "{how}: the abandoned transaction was rolled back");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn schema_tenant_transactions_ended_by_drop_cancel_or_panic_leave_no_cached_types() {
    let Some(url) = service_url(Service::Postgres, "type_cache::ended_abnormally") else {
        return;
    };
    let mut env = PgSandbox::new(&url, ScopeMode::Shared).await.unwrap();
    let a = env.tenant("abandon-a", Strategy::Schema).await.unwrap();
    let b = env.tenant("abandon-b", Strategy::Schema).await.unwrap();
    own_mood_type(&env, &a, &["calm", "tense"]).await;
    own_mood_type(&env, &b, &["sunny", "rainy", "tense"]).await;
    // The shared schema's own `mood`, seen by plain runtime connections.
    env.admin
        .execute(AssertSqlSafe(format!(
            "CREATE TYPE \"{}\".mood AS ENUM ('sunny')",
            env.shared_schema
        )))
        .await
        .unwrap();
    let tenancy = one_connection(&env, &url);
    let calm = Mood("calm".to_owned());

    // Dropped without commit or rollback, after typed statements.
    let mut tx = tenancy.begin(&a).await.unwrap();
    round_trip(&mut tx, &calm).await;
    drop(tx);
    other_tenant_after(&env, &tenancy, &a, &b, "dropped").await;

    // Cancelled: the future is dropped while a statement is in flight.
    let cancelled = tokio::time::timeout(std::time::Duration::from_millis(300), async {
        let mut tx = tenancy.begin(&a).await.unwrap();
        round_trip(&mut tx, &calm).await;
        tx.execute("SELECT pg_sleep(2)").await.unwrap();
        unreachable!("the sleep outlasts the timeout");
    })
    .await;
    assert!(cancelled.is_err(), "the timeout cancelled the future");
    other_tenant_after(&env, &tenancy, &a, &b, "cancelled").await;

    // A panic unwinds through the scoped transaction.
    let (scoped, ctx, mood) = (tenancy.clone(), a.clone(), calm.clone());
    let panicked = tokio::spawn(async move {
        let mut tx = scoped.begin(&ctx).await.unwrap();
        round_trip(&mut tx, &mood).await;
        panic!("a handler panics inside the tenant's transaction");
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    other_tenant_after(&env, &tenancy, &a, &b, "panicked").await;

    drop(tenancy);
    env.cleanup().await;
}
