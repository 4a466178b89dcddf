//! The report: a table per function (and per managed policy) of each action's grant, use and status, and every
//! problem found.

/// One row of a function's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub action: String,
    /// `yes`, `no` (no statement grants it), `partly` (granted, but not on every resource it was used on).
    pub allowed: &'static str,
    pub used: u64,
    /// `ok`, `MISSING`, `RESOURCE` (not allowed on a resource it was used on), `UNUSED`, `PART-UNUSED` (used, but
    /// some statement's grant of it is not), `excused` (an unused grant explained under IamExceptions), `STALE`.
    pub status: &'static str,
    pub exception: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Section {
    /// A function's binary, or a managed policy's logical id.
    pub function: String,
    pub logical_id: String,
    /// The recordings held against it.
    pub recordings: Vec<String>,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sections: Vec<Section>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The tables, then the problems (or that there are none).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            if section.recordings == [section.function.clone()] {
                out.push_str(&format!("{} ({})\n", section.function, section.logical_id));
            } else {
                out.push_str(&format!("{} (the calls of {})\n", section.function, section.recordings.join(", ")));
            }
            let header = ["action", "allowed", "used", "status", "exception"];
            let cells: Vec<[String; 5]> = section
                .rows
                .iter()
                .map(|r| {
                    [
                        r.action.clone(),
                        r.allowed.to_owned(),
                        r.used.to_string(),
                        r.status.to_owned(),
                        r.exception.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for row in &cells {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: [&str; 5]| {
                let text: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
                format!("  {}\n", text.join("  ").trim_end())
            };
            out.push_str(&line(header));
            for row in &cells {
                out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
            }
            out.push('\n');
        }
        if self.problems.is_empty() {
            out.push_str("iam-check: every recorded call is allowed and every grant is used or explained\n");
        } else {
            out.push_str(&format!("iam-check: {} problem(s)\n", self.problems.len()));
            for problem in &self.problems {
                out.push_str(&format!("  - {problem}\n"));
            }
        }
        out
    }
}
