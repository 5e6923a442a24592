//! The in-memory stores pass the conformance suites.

mod subscriptions {
    use std::sync::Arc;

    use saas_billing::SubscriptionStore;
    use saas_billing::store::InMemorySubscriptionStore;

    async fn store() -> Option<Arc<dyn SubscriptionStore>> {
        Some(Arc::new(InMemorySubscriptionStore::new()))
    }
    saas_billing::subscription_store_conformance!(store);
}

mod usage {
    use std::sync::Arc;

    use saas_billing::UsageStore;
    use saas_billing::store::InMemoryUsageStore;

    async fn store() -> Option<Arc<dyn UsageStore>> {
        Some(Arc::new(InMemoryUsageStore::new()))
    }
    saas_billing::usage_store_conformance!(store);
}

mod invoices {
    use std::sync::Arc;

    use saas_billing::InvoiceStore;
    use saas_billing::store::InMemoryInvoiceStore;

    async fn store() -> Option<Arc<dyn InvoiceStore>> {
        Some(Arc::new(InMemoryInvoiceStore::new()))
    }
    saas_billing::invoice_store_conformance!(store);
}

mod coupons {
    use std::sync::Arc;

    use saas_billing::CouponStore;
    use saas_billing::store::InMemoryCouponStore;

    async fn store() -> Option<Arc<dyn CouponStore>> {
        Some(Arc::new(InMemoryCouponStore::new()))
    }
    saas_billing::coupon_store_conformance!(store);
}
