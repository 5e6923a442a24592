//! The SQL text of the PostgreSQL trigger functions. Every piece is a
//! constant of this crate or a validated, quoted identifier; none contains
//! a quote to escape.

use saas_tenancy::postgres::TENANT_SETTING;

use super::{
    SUBSCRIPTION_CREATED, SUBSCRIPTION_STATUS_CHANGED, TENANT_CREATED, TENANT_DELETED,
    TENANT_PROVISIONED, TENANT_REMOVED, TENANT_STATUS_CHANGED,
};

/// The outbox insert closing a trigger function: the event JSON built
/// from `event_type` and `data` (declared by the body).
pub(super) struct Insert {
    pub(super) tenant: &'static str,
    pub(super) topic: &'static str,
    pub(super) source: &'static str,
    pub(super) subject: &'static str,
}

impl Insert {
    pub(super) fn sql(&self, outbox: &str) -> String {
        let Insert {
            tenant,
            topic,
            source,
            subject,
        } = self;
        // Every piece is a constant of this crate or a validated,
        // quoted identifier; none contains a quote to escape.
        format!(
            "previous_tenant := current_setting('{TENANT_SETTING}', true);
    PERFORM set_config('{TENANT_SETTING}', {tenant}::text, true);
    INSERT INTO {outbox} (tenant_id, topic, event) VALUES ({tenant}, '{topic}', jsonb_build_object(
        'specversion', '1.0',
        'id', gen_random_uuid()::text,
        'source', '{source}',
        'type', event_type,
        'time', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
        'subject', {subject},
        'tenantid', {tenant}::text,
        'datacontenttype', 'application/json',
        'data', data)::text);
    PERFORM set_config('{TENANT_SETTING}', coalesce(previous_tenant, ''), true);"
        )
    }
}

pub(super) const FUNCTION_TEMPLATE: &str =
    "CREATE OR REPLACE FUNCTION __FUNCTION__() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $saas$
DECLARE
    changed record;
    event_type text;
    status_from text;
    status_to text;
    data jsonb;
    previous_tenant text;
BEGIN
    __BODY__
    __INSERT__
    RETURN NULL;
END
$saas$";

/// Picks the event type from the operation and the statuses, and builds
/// the event's data.
pub(super) fn tenant_function_body() -> String {
    format!(
        "IF TG_OP = 'INSERT' THEN
        changed := NEW;
        event_type := '{TENANT_CREATED}';
        status_to := NEW.status;
    ELSIF TG_OP = 'DELETE' THEN
        changed := OLD;
        event_type := '{TENANT_REMOVED}';
        status_from := OLD.status;
    ELSE
        changed := NEW;
        status_from := OLD.status;
        status_to := NEW.status;
        event_type := CASE
            WHEN status_from = 'provisioning' AND status_to = 'active' THEN '{TENANT_PROVISIONED}'
            WHEN status_to = 'deleted' THEN '{TENANT_DELETED}'
            ELSE '{TENANT_STATUS_CHANGED}' END;
    END IF;
    data := jsonb_build_object('id', changed.id::text, 'slug', changed.slug,
        'strategy', changed.strategy, 'cluster', changed.cluster,
        'from', status_from, 'to', status_to);"
    )
}

/// The same for a subscription (its status lives in the JSON `state`).
pub(super) fn subscription_function_body() -> String {
    format!(
        "IF TG_OP = 'INSERT' THEN
        event_type := '{SUBSCRIPTION_CREATED}';
    ELSE
        event_type := '{SUBSCRIPTION_STATUS_CHANGED}';
        status_from := OLD.state->>'status';
    END IF;
    status_to := NEW.state->>'status';
    data := jsonb_build_object('id', NEW.id::text, 'tenant_id', NEW.tenant_id::text,
        'plan', NEW.state->'plan', 'from', status_from, 'to', status_to);"
    )
}
