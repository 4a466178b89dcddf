//! `iam-check <dir> <template.yaml>`: holds the AWS calls the function binaries and the CLI made in the integration
//! tests (recorded under `FLEET_IAM_RECORD=<dir>` by `devstack::iam`'s proxies) against the functions' inline
//! policies and the operators' managed policies.
//! Prints a table per function and every problem; exits 1 when there is one, 2 on a usage or read error.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, template] = args.as_slice() else {
        eprintln!("usage: iam-check <recorded calls dir> <template.yaml>");
        return ExitCode::from(2);
    };
    match iam_check::check(Path::new(dir), Path::new(template)) {
        Ok(report) => {
            print!("{}", report.render());
            if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("iam-check: {e}");
            ExitCode::from(2)
        }
    }
}
