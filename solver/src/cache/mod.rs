//! Cache store.
