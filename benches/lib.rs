//! Benchmarks for saas-foundation. None are implemented yet: the tenancy,
//! billing and events issues add them (see `shared/DESIGN.md` §8).
