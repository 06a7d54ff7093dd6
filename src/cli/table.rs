//! Borderless text tables whose columns line up whatever the width of their cells.

use comfy_table::Table;

/// A table without borders or lines, with `header` as its first row.
pub fn plain<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_header(header);
    table
}
