//! The [`Catalog`](crate::Catalog) conformance suite: one function per contract bullet.

use std::collections::BTreeSet;

use saas_core::{TenantKey, TenantLookup, TenantSlug, TenantStatus};
use serde_json::json;

use crate::{
    CatalogLookup, ClusterName, DynCatalog, ListOptions, NewTenant, Placement, Strategy,
    TenancyError,
};

fn new_tenant(slug: &str, strategy: Strategy) -> NewTenant {
    NewTenant::new(
        TenantSlug::parse(slug).expect("test slug"),
        format!("Tenant {slug}"),
        strategy,
        ClusterName::new("main").expect("cluster"),
    )
    .expect("new tenant")
}

/// `create` stores the record as given; `get` and `get_by_slug` read it back.
pub async fn create_then_get(catalog: DynCatalog) {
    let mut metadata = serde_json::Map::new();
    metadata.insert("plan".into(), json!("pro"));
    metadata.insert("seats".into(), json!(12));
    let tenant = new_tenant("acme", Strategy::Schema).metadata(metadata.clone());
    let id = tenant.id();
    let created = catalog.create(tenant).await.expect("create");
    assert_eq!(created.id, id);
    assert_eq!(created.status, TenantStatus::Provisioning);
    assert_eq!(created.metadata, metadata);
    assert!(matches!(created.placement, Placement::Schema { .. }));

    let by_id = catalog.get(id).await.expect("get").expect("found by id");
    assert_eq!(by_id, created, "the stored record equals the created one");
    let by_slug = catalog
        .get_by_slug(&created.slug)
        .await
        .expect("get_by_slug")
        .expect("found by slug");
    assert_eq!(by_slug, created);
}

/// Unknown tenants are `Ok(None)`.
pub async fn unknown_tenants_are_none(catalog: DynCatalog) {
    assert!(
        catalog
            .get(saas_core::TenantId::new())
            .await
            .expect("get")
            .is_none()
    );
    let slug = TenantSlug::parse("nobody").expect("slug");
    assert!(catalog.get_by_slug(&slug).await.expect("get").is_none());
}

/// A second tenant with the same slug is `AlreadyExists`, and the first is
/// unchanged.
pub async fn duplicate_slug_is_already_exists(catalog: DynCatalog) {
    let first = catalog
        .create(new_tenant("acme", Strategy::Shared))
        .await
        .expect("first");
    let err = catalog
        .create(new_tenant("acme", Strategy::Database))
        .await
        .expect_err("second create of the same slug");
    assert!(matches!(err, TenancyError::AlreadyExists { .. }), "{err:?}");
    let stored = catalog
        .get_by_slug(&first.slug)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(stored, first);
}

/// Of many concurrent creates of one slug, exactly one wins.
pub async fn concurrent_creates_of_one_slug_one_wins(catalog: DynCatalog) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let catalog = catalog.clone();
        tasks.push(tokio::spawn(async move {
            catalog
                .create(new_tenant("contested", Strategy::Shared))
                .await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(TenancyError::AlreadyExists { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// `list` pages through every tenant once, in id order.
pub async fn list_pages_in_id_order(catalog: DynCatalog) {
    let mut created = Vec::new();
    for i in 0..7 {
        let t = catalog
            .create(new_tenant(&format!("tenant-{i}"), Strategy::Shared))
            .await
            .expect("create");
        created.push(t.id);
    }
    let mut seen = Vec::new();
    let mut options = ListOptions::default().with_limit(3);
    let mut pages = 0;
    loop {
        let page = catalog.list(&options).await.expect("list");
        pages += 1;
        assert!(page.tenants.len() <= 3);
        seen.extend(page.tenants.iter().map(|t| t.id));
        match page.next {
            Some(next) => options = options.with_after(Some(next)),
            None => break,
        }
        assert!(pages < 10, "paging does not terminate");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "ordered by id");
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>(),
        created.iter().collect::<BTreeSet<_>>(),
        "every tenant exactly once"
    );
    assert_eq!(seen.len(), 7);

    // `list_all` follows the pages itself (3 per page here) from the start.
    let all = catalog
        .list_all(
            &ListOptions::default()
                .with_limit(3)
                .with_after(Some(seen[4])),
        )
        .await
        .expect("list_all");
    assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), seen);
}

/// `list` filters by status and strategy, and refuses a bad page size.
pub async fn list_filters(catalog: DynCatalog) {
    let a = catalog
        .create(new_tenant("a", Strategy::Shared))
        .await
        .expect("a");
    catalog
        .create(new_tenant("b", Strategy::Schema))
        .await
        .expect("b");
    catalog
        .set_status(a.id, TenantStatus::Active)
        .await
        .expect("activate");

    let active = catalog
        .list(&ListOptions::default().with_status(TenantStatus::Active))
        .await
        .expect("list");
    assert_eq!(
        active.tenants.iter().map(|t| t.id).collect::<Vec<_>>(),
        [a.id]
    );
    let schema = catalog
        .list(&ListOptions::default().with_strategy(Strategy::Schema))
        .await
        .expect("list");
    assert_eq!(schema.tenants.len(), 1);
    assert_eq!(schema.tenants[0].slug.as_str(), "b");
    for limit in [0, 1001] {
        let err = catalog
            .list(&ListOptions::default().with_limit(limit))
            .await
            .expect_err("bad page size");
        assert!(matches!(err, TenancyError::InvalidInput(_)));
    }
}

/// Status changes follow the transition table; refused ones change nothing.
pub async fn status_follows_the_transition_table(catalog: DynCatalog) {
    use TenantStatus::*;
    let t = catalog
        .create(new_tenant("acme", Strategy::Shared))
        .await
        .expect("create");
    for to in [Active, Suspended, Active, Active, Deleting, Deleted] {
        let r = catalog
            .set_status(t.id, to)
            .await
            .expect("allowed transition");
        assert_eq!(r.status, to);
    }
    let err = catalog
        .set_status(t.id, Active)
        .await
        .expect_err("deleted → active");
    assert!(
        matches!(
            err,
            TenancyError::InvalidTransition {
                from: Deleted,
                to: Active,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        catalog.get(t.id).await.expect("get").expect("kept").status,
        Deleted
    );
    let err = catalog
        .set_status(saas_core::TenantId::new(), Active)
        .await
        .expect_err("unknown");
    assert!(matches!(err, TenancyError::TenantNotFound(_)));
}

/// `cut_over` changes a `moving` tenant's placement and makes it active
/// in one step, is idempotent once done, and touches no tenant that is
/// not moving at the given placement. A catalog that keeps the default
/// (refusing with [`TenancyError::Unsupported`]) passes if the record is
/// left as it was.
pub async fn cut_over_moves_only_a_moving_tenant(catalog: DynCatalog) {
    use TenantStatus::*;
    let t = catalog
        .create(new_tenant("acme", Strategy::Shared))
        .await
        .expect("create");
    catalog.set_status(t.id, Active).await.expect("active");
    let from = t.placement.clone();
    let to = Placement::derive(
        Strategy::Database,
        ClusterName::new("other").expect("cluster"),
        t.id,
    );
    // Not moving: refused, unchanged (or not supported at all).
    match catalog.cut_over(t.id, &from, &to).await {
        Err(TenancyError::Unsupported(_)) => {
            let r = catalog.get(t.id).await.expect("get").expect("kept");
            assert_eq!((r.status, r.placement), (Active, from));
            return;
        }
        Err(TenancyError::InvalidInput(_)) => {}
        other => panic!("cut-over of an active tenant: {other:?}"),
    }
    catalog.set_status(t.id, Moving).await.expect("moving");
    // Moving, but from another placement: refused.
    let err = catalog
        .cut_over(t.id, &to, &from)
        .await
        .expect_err("wrong source");
    assert!(matches!(err, TenancyError::InvalidInput(_)), "{err:?}");
    let r = catalog.get(t.id).await.expect("get").expect("kept");
    assert_eq!((r.status, r.placement.clone()), (Moving, from.clone()));
    // The cut-over, then its repeat.
    for _ in 0..2 {
        let r = catalog.cut_over(t.id, &from, &to).await.expect("cut over");
        assert_eq!((r.status, r.placement), (Active, to.clone()));
    }
    let r = catalog.get(t.id).await.expect("get").expect("kept");
    assert_eq!((r.status, r.placement), (Active, to));
    let err = catalog
        .cut_over(saas_core::TenantId::new(), &from, &from)
        .await
        .expect_err("unknown");
    assert!(matches!(err, TenancyError::TenantNotFound(_)), "{err:?}");
}

/// The catalog serves the request layer, with the placement attached.
pub async fn serves_as_tenant_lookup(catalog: DynCatalog) {
    let t = catalog
        .create(new_tenant("acme", Strategy::Database))
        .await
        .expect("create");
    let lookup = CatalogLookup::new(catalog);
    let by_slug = lookup
        .find(&TenantKey::Slug(t.slug.clone()))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(by_slug.id, t.id);
    assert_eq!(by_slug.status, TenantStatus::Provisioning);
    assert_eq!(by_slug.extensions.get::<Placement>(), Some(&t.placement));
    let by_id = lookup
        .find(&TenantKey::Id(t.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(by_id.slug, t.slug);
    assert!(
        lookup
            .find(&TenantKey::Id(saas_core::TenantId::new()))
            .await
            .expect("find")
            .is_none()
    );
}

/// Stamps out the catalog suite for a backend. `$factory` is an async fn
/// returning `Option<(DynCatalog, Cleanup)>` (`None` skips: its service is
/// not configured).
#[macro_export]
macro_rules! catalog_conformance {
    ($factory:path) => {
        $crate::catalog_conformance!(@each $factory;
            create_then_get,
            unknown_tenants_are_none,
            duplicate_slug_is_already_exists,
            concurrent_creates_of_one_slug_one_wins,
            list_pages_in_id_order,
            list_filters,
            status_follows_the_transition_table,
            cut_over_moves_only_a_moving_tenant,
            serves_as_tenant_lookup
        );
    };
    (@each $factory:path; $($name:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((catalog, cleanup)) = $factory().await else { return };
                $crate::testing::run_with_cleanup(
                    $crate::testing::catalog::$name(catalog),
                    cleanup,
                )
                .await;
            }
        )+
    };
}
