//! Behaviour specific to PostgreSQL: several stores, as in several processes, on one schema.
