//! `--output table` for people, `--output json` for scripts (one object per line).

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// One JSON object on one line.
pub fn json_line(value: &Value) {
    println!("{value}");
}

pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    if !header.is_empty() {
        table.set_header(header.to_vec());
    }
    table
}

/// Two columns: field and value.
pub fn fields(rows: &[(String, String)]) -> Table {
    let mut table = table(&[]);
    table.load_preset(presets::NOTHING);
    for (key, value) in rows {
        table.add_row(vec![key.as_str(), value.as_str()]);
    }
    table
}
