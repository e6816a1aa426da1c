//! The exposition's rules of writing, with no state: formats, escaping and
//! numbers, the one sample-line writer, the protobuf writer, and each family's precomputed
//! rendering plan. Everything that renders (the registry's metrics, merged
//! shards, collectors) writes through here.

pub(crate) mod format;
pub(crate) mod line;
pub(crate) mod names;
pub(crate) mod plan;
pub(crate) mod proto;
pub(crate) mod sample;
pub(crate) mod text;
