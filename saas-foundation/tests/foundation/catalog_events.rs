//! What the catalog-event tests share: reading a lifecycle event's step,
//! the crash scripts' expected events, the exactly-once check, and the
//! child "server" process that the crash tests kill.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use saas_foundation::catalog_events::{
    TENANT_CREATED, TENANT_DELETED, TENANT_PROVISIONED, TENANT_STATUS_CHANGED,
};
use saas_foundation::events::{Data, Event};

/// Set in the child process: the directory it serves as the "server".
pub(crate) const SERVER_VAR: &str = "SAAS_CATALOG_EVENTS_SERVER";

/// `(type, from, to)` of a tenant lifecycle event.
pub(crate) type Step = (String, Option<String>, Option<String>);

pub(crate) fn step(event: &Event) -> Step {
    let Some(Data::Json(data)) = event.data() else {
        panic!("a lifecycle event without JSON data: {event:?}");
    };
    let field = |name: &str| data[name].as_str().map(str::to_owned);
    (event.event_type().to_owned(), field("from"), field("to"))
}

/// A step from borrowed parts.
pub(crate) fn owned(ty: &str, from: Option<&str>, to: Option<&str>) -> Step {
    (
        ty.to_owned(),
        from.map(str::to_owned),
        to.map(str::to_owned),
    )
}

/// The events the crash scripts (provision, suspend, delete) write for a
/// tenant that has reached `status`.
pub(crate) fn script_steps(status: &str) -> Vec<Step> {
    let all = [
        owned(TENANT_CREATED, None, Some("provisioning")),
        owned(TENANT_PROVISIONED, Some("provisioning"), Some("active")),
        owned(TENANT_STATUS_CHANGED, Some("active"), Some("suspended")),
        owned(TENANT_STATUS_CHANGED, Some("suspended"), Some("deleting")),
        owned(TENANT_DELETED, Some("deleting"), Some("deleted")),
    ];
    let reached = all
        .iter()
        .position(|s| s.2.as_deref() == Some(status))
        .unwrap_or_else(|| panic!("the script never reaches {status}"));
    all[..=reached].to_vec()
}

/// One handled event as the consumer recorded it.
#[derive(Debug, Clone)]
pub(crate) struct Handled {
    pub(crate) event_id: String,
    pub(crate) tenant: String,
    pub(crate) step: Step,
}

/// A `handled` row: event id, tenant, type, from, to.
pub(crate) type HandledRow = (String, String, String, Option<String>, Option<String>);

impl From<HandledRow> for Handled {
    fn from((event_id, tenant, ty, from, to): HandledRow) -> Self {
        Handled {
            event_id,
            tenant,
            step: (ty, from, to),
        }
    }
}

/// Every committed change (the catalog's `(tenant, status)` after the
/// crash) has exactly one handled event, and nothing else was handled.
pub(crate) fn assert_exactly_once(catalog: &[(String, String)], handled: &[Handled]) {
    let mut ids = HashSet::new();
    for h in handled {
        assert!(
            ids.insert(&h.event_id),
            "event {} handled twice",
            h.event_id
        );
    }
    let mut by_tenant: HashMap<&str, Vec<Step>> = HashMap::new();
    for h in handled {
        by_tenant.entry(&h.tenant).or_default().push(h.step.clone());
    }
    for (tenant, status) in catalog {
        let mut got = by_tenant.remove(tenant.as_str()).unwrap_or_default();
        let mut want = script_steps(status);
        got.sort();
        want.sort();
        assert_eq!(got, want, "tenant {tenant} in status {status}");
    }
    assert!(
        by_tenant.is_empty(),
        "events of unknown tenants: {by_tenant:?}"
    );
}

/// Runs the calling test again as a child "server" (its `SERVER_VAR` set to
/// `target`), reads its stdout until it has reported `changes` committed
/// changes, then kills it (SIGKILL on Unix). Returns the lines it printed.
pub(crate) fn run_server_and_kill(test: &str, target: &str, changes: usize) -> usize {
    // `module_path!()` starts with the binary's crate name; libtest's test
    // names do not.
    let name = test.split_once("::").map_or(test, |(_, rest)| rest);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(SERVER_VAR, target)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        if line.unwrap().starts_with("committed ") {
            seen += 1;
            if seen >= changes {
                break;
            }
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        seen >= changes,
        "the server stopped early ({status}) after {seen} changes"
    );
    seen
}
