//! Converters, one file per op family. Each file's `register` adds its ops.

mod conv;
mod elementwise;
mod reduce;
mod shape;

use super::registry::Registry;

pub(super) fn register_all(reg: &mut Registry) {
    conv::register(reg);
    elementwise::register(reg);
    shape::register(reg);
    reduce::register(reg);
}
