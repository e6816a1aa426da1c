//! Collectors every process gets without asking.

use crate::collector::Collector;
use crate::process::ProcessCollector;

pub(crate) static COLLECTORS: &[&dyn Collector] = &[&ProcessCollector];
