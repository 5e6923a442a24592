//! The row-level security policy is cheap: the tenant is read through
//! `(SELECT current_setting(..))`, evaluated once per statement (an
//! InitPlan), and compared with the bare column, so the tenant index is
//! used. A policy casting the column (`tenant_id::text = current_setting(..)`)
//! would scan every tenant's rows; the plan check below refuses it.

use saas_tenancy::postgres::{
    POLICY_NAME, ScopeMode, SqlIdent, TENANT_SETTING, row_security_statements,
};
use saas_tenancy::{Strategy, TenantTable};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Executor};

use crate::pg_env::sandbox;

const TABLE: &str = "plan_events";
const INDEX: &str = "plan_events_tenant_idx";

/// Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut all = vec![plan];
    if let Some(children) = plan.get("Plans").and_then(Value::as_array) {
        for child in children {
            all.extend(nodes(child));
        }
    }
    all
}

fn field<'a>(node: &'a Value, name: &str) -> &'a str {
    node.get(name).and_then(Value::as_str).unwrap_or("")
}

/// `Ok` when the plan reads the tenant once (an InitPlan) and scans the
/// tenant index with the bare column compared to that InitPlan's value.
fn uses_tenant_index_once(explain: &Value) -> Result<(), String> {
    let root = &explain[0]["Plan"];
    let all = nodes(root);
    let init = all
        .iter()
        .find(|n| field(n, "Parent Relationship") == "InitPlan")
        .ok_or_else(|| format!("no InitPlan: the tenant is read per row\n{root:#}"))?;
    let subplan = field(init, "Subplan Name");
    // PostgreSQL ≤ 16 names the value `$N` ("InitPlan 1 (returns $0)");
    // 17 and later refer to it as `(InitPlan 1).col1`.
    let value = match subplan.split_once("(returns ") {
        Some((_, rest)) => rest.trim_end_matches(')').to_owned(),
        None => format!("({subplan}).col1"),
    };
    let expected = format!("(tenant_id = {value})");
    let scan = all
        .iter()
        .find(|n| field(n, "Index Name") == INDEX)
        .ok_or_else(|| format!("the tenant index is not used\n{root:#}"))?;
    let cond = field(scan, "Index Cond");
    if cond != expected {
        return Err(format!("index condition {cond:?}, expected {expected:?}"));
    }
    Ok(())
}

async fn explain_scoped(
    env: &saas_tenancy::testing::pg::PgSandbox,
    ctx: &saas_core::TenantContext,
) -> Value {
    let mut tx = env.tenancy.begin(ctx).await.unwrap();
    let explain: Value = sqlx::query_scalar(AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) SELECT * FROM {TABLE} WHERE true"
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    explain
}

#[tokio::test]
async fn the_policy_reads_the_tenant_once_and_uses_the_tenant_index() {
    let Some(mut env) = sandbox("rls_plan::index", ScopeMode::Shared).await else {
        return;
    };
    let ctx = env.tenant("planned", Strategy::Shared).await.unwrap();
    let runtime = SqlIdent::new(env.runtime_role.clone()).unwrap();
    env.admin
        .execute(AssertSqlSafe(format!(
            "CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, tenant_id uuid NOT NULL, body text NOT NULL); \
             CREATE INDEX {INDEX} ON {TABLE} (tenant_id)"
        )))
        .await
        .unwrap();
    // The library's own policy statements, as `setup` runs them.
    for statement in row_security_statements(&TenantTable::new(TABLE).unwrap(), &runtime) {
        env.admin.execute(AssertSqlSafe(statement)).await.unwrap();
    }
    // 200 other tenants and this one, 50 rows each; statistics current.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {TABLE} (tenant_id, body) \
         SELECT t, 'row ' || n FROM \
           (SELECT gen_random_uuid() AS t FROM generate_series(1, 200) \
            UNION ALL SELECT $1) AS tenants, generate_series(1, 50) AS n"
    )))
    .bind(ctx.tenant_id())
    .execute(&env.admin)
    .await
    .unwrap();
    env.admin
        .execute(AssertSqlSafe(format!("ANALYZE {TABLE}")))
        .await
        .unwrap();

    let explain = explain_scoped(&env, &ctx).await;
    if let Err(why) = uses_tenant_index_once(&explain) {
        panic!("{why}");
    }
    // Scoped, the tenant sees exactly its 50 rows.
    let mut tx = env.tenancy.begin(&ctx).await.unwrap();
    let mine: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {TABLE}")))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(mine, 50);
    tx.rollback().await.unwrap();

    // The check is not vacuous: with the column cast, it fails.
    env.admin
        .execute(AssertSqlSafe(format!(
            "DROP POLICY {POLICY_NAME} ON {TABLE}; \
             CREATE POLICY {POLICY_NAME} ON {TABLE} FOR ALL \
             USING (tenant_id::text = current_setting('{TENANT_SETTING}', true))"
        )))
        .await
        .unwrap();
    let explain = explain_scoped(&env, &ctx).await;
    assert!(
        uses_tenant_index_once(&explain).is_err(),
        "a cast column passed the plan check: {explain:#}"
    );
    env.admin
        .execute(AssertSqlSafe(format!("DROP TABLE {TABLE}")))
        .await
        .unwrap();
    env.cleanup().await;
}
