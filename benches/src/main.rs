//! `moat-bench`: the driver, the backends, the load generator and a certificate maker.
//!
//! ```text
//! moat-bench run [options]          run the benchmark (see `moat-bench run --help`)
//! moat-bench backend [IP] [--verify] echo, sink, source and mux backends on IP (default 127.0.0.1)
//! moat-bench load --mode MODE ...   one generator run (the driver calls this)
//! moat-bench certs DIR              write a CA, server and client certificate into DIR
//! ```

use std::path::Path;

use moat_bench::{backend, certs, die, driver, load};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match argv.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("run", &argv[..]),
    };
    let result = match command {
        "run" => driver::run(rest),
        "backend" => backend::main(rest),
        "load" => load::parse_args(rest).and_then(load::run),
        "certs" => match rest.first() {
            Some(dir) => certs::generate(Path::new(dir)).map(|files| {
                println!("wrote certificates into {}", files.dir.display());
            }),
            None => Err("certs: name a directory".into()),
        },
        "-h" | "--help" | "help" => {
            println!(
                "moat-bench run [options] | backend [IP] [--verify] | load --mode MODE ... | certs DIR\n\n{}",
                driver::usage()
            );
            Ok(())
        }
        other => Err(format!(
            "unknown command `{other}` (run, backend, load, certs)"
        )),
    };
    if let Err(e) = result {
        die(&e);
    }
}
