//! One entry function per command. Each builds the `Config`, does its work through
//! the queue, reconcile and tree modules, prints for a sysadmin (or JSON) and returns
//! an [`Exit`].

use crate::Exit;
use crate::adapters;
use crate::cli::{Cli, Command, HookManager};
use crate::config::Config;
use crate::queue::{self, Db};
use crate::reconcile::{self, Options, Report, Selection};
use crate::tree::{self, Entry};
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::io::{Read, Write};

pub struct Out {
    json: bool,
    verbose: bool,
    quiet: bool,
}

pub fn run(cli: Cli) -> Result<Exit> {
    let out = Out {
        json: cli.json,
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    if let Command::Generate { what } = cli.command {
        generate(what)?;
        return Ok(Exit::Done);
    }
    if let Command::Failpoints = cli.command {
        for f in crate::failpoints::FAILPOINTS {
            println!("{f}");
        }
        return Ok(Exit::Done);
    }
    if let Command::Hook(h) = &cli.command {
        // A hook never fails the transaction: every error becomes a message and exit 0.
        let res = hook(&cli, h.manager, &h.paths, &out);
        if let Err(e) = res {
            println!(
                ":: svsettle: error: {} (hints that were queued stay queued; see svsettle status)",
                one_line(&format!("{e:#}"))
            );
            if let Ok(cfg) = Config::load(&cli.root, cli.config.as_deref())
                && let Ok(mut db) = Db::open(&cfg.state_dir.host)
            {
                let _ = db.record_problem("hook", None, None, &format!("{e:#}"));
            }
        }
        return Ok(Exit::Done);
    }
    let cfg = Config::load(&cli.root, cli.config.as_deref())?;
    match cli.command {
        Command::Enqueue(a) => enqueue(&cfg, &a.paths, &a.source, &a.txn, &out),
        Command::Reconcile(a) => {
            let selection = if a.all {
                Selection::All
            } else if !a.services.is_empty() {
                Selection::Services(a.services)
            } else {
                Selection::Pending
            };
            let opts = Options {
                selection,
                dry_run: a.dry_run,
                wait: a.wait,
                settle_gate: true,
                trigger: "manual".into(),
            };
            let report = reconcile::reconcile(&cfg, &opts)?;
            print_report(&report, &out, "")?;
            Ok(exit_of(&report))
        }
        Command::Status => status(&cfg, &out),
        Command::Diff { service } => diff(&cfg, &service),
        Command::History { service, limit } => history(&cfg, service.as_deref(), limit, &out),
        Command::Resolve(a) => {
            let report = reconcile::resolve(&cfg, &a.service, a.take_stock)?;
            print_report(&report, &out, "")?;
            Ok(exit_of(&report))
        }
        Command::Config => {
            print_config(&cfg);
            Ok(Exit::Done)
        }
        Command::Hook(_) | Command::Failpoints | Command::Generate { .. } => {
            unreachable!("handled above")
        }
    }
}

/// The man page (with an EXIT STATUS section) and completions, from the clap
/// definitions, so they cannot drift from `--help`.
fn generate(what: crate::cli::Generate) -> Result<()> {
    use crate::cli::Generate;
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    match what {
        Generate::Man => {
            let man = clap_mangen::Man::new(cmd.clone());
            man.render_title(&mut out)?;
            man.render_name_section(&mut out)?;
            man.render_synopsis_section(&mut out)?;
            man.render_description_section(&mut out)?;
            man.render_options_section(&mut out)?;
            man.render_subcommands_section(&mut out)?;
            writeln!(out, ".SH \"EXIT STATUS\"")?;
            for (code, meaning) in [
                ("0", "done (nothing failed)"),
                (
                    "1",
                    "some services failed (each is named; the others were still reconciled)",
                ),
                ("2", "usage or configuration error"),
                (
                    "3",
                    "deferred: a package transaction or another reconcile is in progress",
                ),
            ] {
                writeln!(out, ".TP\n{code}\n{meaning}")?;
            }
            writeln!(
                out,
                ".SH FILES\n.TP\n/etc/svsettle.toml\nconfiguration, merged over the embedded default"
            )?;
            writeln!(
                out,
                ".TP\n/var/lib/svsettle/state.db\nqueue, bases, journal and history (SQLite)"
            )?;
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                writeln!(out, ".SH \"SVSETTLE {}\"", sub.get_name().to_uppercase())?;
                let man = clap_mangen::Man::new(sub.clone());
                man.render_synopsis_section(&mut out)?;
                man.render_description_section(&mut out)?;
                man.render_options_section(&mut out)?;
            }
            man.render_version_section(&mut out)?;
        }
        Generate::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "svsettle", &mut out)
        }
        Generate::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "svsettle", &mut out)
        }
        Generate::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "svsettle", &mut out)
        }
    }
    Ok(())
}

fn exit_of(r: &Report) -> Exit {
    if r.deferred.is_some() {
        Exit::Deferred
    } else if r.failed() > 0 {
        Exit::SomeFailed
    } else {
        Exit::Done
    }
}

/// Prints a reconcile report; `prefix` is put before every line (hooks: ":: svsettle: ").
pub fn print_report(r: &Report, out: &Out, prefix: &str) -> Result<()> {
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if out.json {
        serde_json::to_writer_pretty(&mut w, r)?;
        writeln!(w)?;
        return Ok(());
    }
    if out.verbose {
        for n in &r.notes {
            writeln!(w, "{prefix}note: {n}")?;
        }
    }
    for n in &r.warnings {
        writeln!(w, "{prefix}warning: {n}")?;
    }
    if let Some(why) = &r.deferred {
        writeln!(w, "{prefix}deferred: {why}")?;
        return Ok(());
    }
    for l in &r.lines {
        if out.quiet && l.kind != "failed" && l.kind != "conflict" {
            continue;
        }
        let pkg = l
            .package
            .as_deref()
            .map(|p| format!(" [{p}]"))
            .unwrap_or_default();
        writeln!(w, "{prefix}{}{pkg}", l.text)?;
    }
    if !out.quiet {
        if r.unchanged > 0 {
            let verb = if r.dry_run { "would stay" } else { "left" };
            writeln!(
                w,
                "{prefix}unchanged: {} service{} {verb} untouched",
                r.unchanged,
                if r.unchanged == 1 { "" } else { "s" }
            )?;
        }
        if r.lines.is_empty() && r.unchanged == 0 {
            writeln!(w, "{prefix}nothing to do")?;
        }
    }
    Ok(())
}

fn enqueue(
    cfg: &Config,
    paths: &[std::ffi::OsString],
    source: &str,
    txn: &str,
    out: &Out,
) -> Result<Exit> {
    let refs: Vec<&OsStr> = paths.iter().map(|p| p.as_os_str()).collect();
    let m = adapters::map_paths(cfg, &refs, source, txn);
    for ig in &m.ignored {
        if !out.quiet {
            eprintln!("svsettle: ignored {ig}: not under a configured stock tree");
        }
    }
    for (p, why) in &m.refused {
        eprintln!("svsettle: refused {p}: {why}");
    }
    if !m.hints.is_empty() {
        let mut db = Db::open(&cfg.state_dir.host)?;
        if let Some(aside) = &db.moved_aside {
            eprintln!(
                "svsettle: warning: the database was corrupt and was moved aside to {}; bases are re-learned from disk (svsettle reconcile --all)",
                aside.display()
            );
        }
        let n = db.enqueue(&m.hints)?;
        if out.verbose {
            eprintln!(
                "svsettle: recorded {n} new hint(s), {} merged",
                m.hints.len() - n
            );
        }
    }
    Ok(if m.refused.is_empty() {
        Exit::Done
    } else {
        Exit::SomeFailed
    })
}

/// `svsettle hook pacman`: queue what the package manager passed, then reconcile the
/// pending hints at once (the settle gate is off: pacman runs PostTransaction hooks
/// after every package and scriptlet, and this hook's name sorts after the others),
/// and print a short summary into the package manager's output. Never waits on
/// pacman's `db.lck` (pacman holds it while hooks run) and never fails the
/// transaction: a failure is printed, recorded for `svsettle status`, and the hints
/// stay queued.
fn hook(cli: &Cli, manager: HookManager, args: &[std::ffi::OsString], out: &Out) -> Result<()> {
    default_path();
    let (paths, source) = match manager {
        HookManager::Pacman => {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .context("cannot read the hook's targets from stdin")?;
            let mut paths = adapters::pacman::parse_targets(&input);
            paths.extend(args.iter().cloned());
            (paths, "pacman")
        }
    };
    let refs: Vec<&OsStr> = paths.iter().map(|p| p.as_os_str()).collect();
    let txn = format!("{source}-{}-{}", queue::now(), std::process::id());
    let trigger = format!("hook {source}");
    let cfg = match Config::load(&cli.root, cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            hook_without_config(cli, &refs, source, &txn, &e);
            return Ok(());
        }
    };
    let mut m = adapters::map_paths(&cfg, &refs, source, &txn);
    adapters::pacman::keep_service_hints(&mut m.hints);
    let mut db = Db::open(&cfg.state_dir.host)?;
    if let Some(aside) = &db.moved_aside {
        println!(
            ":: svsettle: warning: the database was corrupt and was moved aside to {}; bases are re-learned from disk (svsettle reconcile --all)",
            aside.display()
        );
    }
    for (p, why) in &m.refused {
        println!(":: svsettle: refused {p}: {why}");
        let _ = db.record_problem(&trigger, None, None, &format!("refused {p}: {why}"));
    }
    if out.verbose {
        println!(
            ":: svsettle: note: package attribution {}",
            adapters::pacman::attribution()
        );
    }
    if let Err(e) = adapters::pacman::attribute(&cfg, &db, &mut m.hints) {
        println!(":: svsettle: note: changes are not attributed to packages: {e:#}");
    }
    db.enqueue(&m.hints)?;
    drop(db);
    let queued: std::collections::BTreeSet<&str> =
        m.hints.iter().map(|h| h.service.as_str()).collect();
    let opts = Options {
        selection: Selection::Pending,
        dry_run: false,
        wait: false,
        // the hook runs when the transaction is over by definition
        settle_gate: false,
        trigger: trigger.clone(),
    };
    let report = reconcile::reconcile(&cfg, &opts)?;
    if out.json {
        return print_report(&report, out, "");
    }
    if report.deferred.is_some() {
        // Without the settle gate only another reconciler holding the lock defers.
        let who = crate::lock::Lock::holder(&cfg.state_dir.host)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        let what = if queued.is_empty() {
            "nothing new was queued".to_string()
        } else {
            format!(
                "{} stay{} queued",
                queued.iter().copied().collect::<Vec<_>>().join(", "),
                if queued.len() == 1 { "s" } else { "" }
            )
        };
        println!(
            ":: svsettle: another svsettle reconcile is running{who}; {what}: run svsettle reconcile --pending when it is done"
        );
        if let Ok(mut db) = Db::open(&cfg.state_dir.host) {
            let _ = db.record_problem(
                &trigger,
                None,
                None,
                &format!("not reconciled: another svsettle reconcile was running{who}; {what}"),
            );
        }
        return Ok(());
    }
    for w in &report.warnings {
        println!(":: svsettle: warning: {w}");
    }
    // Hints for a domain whose supervisor programs are missing wait in the queue.
    let mut waiting: std::collections::BTreeMap<&str, (&str, Vec<&str>)> = Default::default();
    for h in &m.hints {
        if let Some(why) = cfg.domain(&h.domain).and_then(|d| d.skipped.as_deref()) {
            let e = waiting
                .entry(h.domain.as_str())
                .or_insert((why, Vec::new()));
            if !e.1.contains(&h.service.as_str()) {
                e.1.push(&h.service);
            }
        }
    }
    for (domain, (why, names)) in &waiting {
        println!(
            ":: svsettle: domain {domain} skipped ({why}): {} stay{} queued",
            names.join(", "),
            if names.len() == 1 { "s" } else { "" }
        );
    }
    for line in hook_summary(&report) {
        println!(":: svsettle: {line}");
    }
    Ok(())
}

/// pacman hands hooks its own environment; run from a bare one (`env -i`, a timer)
/// PATH is unset and no supervisor program would be found.
fn default_path() {
    if std::env::var_os("PATH").is_none_or(|p| p.is_empty()) {
        // SAFETY: the process is still single-threaded here.
        unsafe {
            std::env::set_var(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
        };
    }
}

/// The configuration is broken: reconcile nothing (its policies are unknown), but keep
/// what the package manager passed, queued under the embedded default layout (an
/// empty file merged over it), and record why for `svsettle status`.
fn hook_without_config(cli: &Cli, refs: &[&OsStr], source: &str, txn: &str, err: &anyhow::Error) {
    let err = one_line(&format!("{err:#}"));
    println!(":: svsettle: error: {err}");
    let queued = (|| -> Result<Vec<String>> {
        let cfg = Config::load(&cli.root, Some(std::path::Path::new("/dev/null")))?;
        let mut m = adapters::map_paths(&cfg, refs, source, txn);
        adapters::pacman::keep_service_hints(&mut m.hints);
        let mut db = Db::open(&cfg.state_dir.host)?;
        db.enqueue(&m.hints)?;
        let mut names: Vec<String> = m.hints.iter().map(|h| h.service.clone()).collect();
        names.sort();
        names.dedup();
        db.record_problem(
            &format!("hook {source}"),
            None,
            None,
            &format!(
                "not reconciled: {err}; queued: {}",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )?;
        Ok(names)
    })();
    match queued {
        Ok(names) if names.is_empty() => println!(
            ":: svsettle: nothing reconciled: fix the configuration, then run svsettle reconcile --pending"
        ),
        Ok(names) => println!(
            ":: svsettle: nothing reconciled; {} stay{} queued: fix the configuration, then run svsettle reconcile --pending",
            names.join(", "),
            if names.len() == 1 { "s" } else { "" }
        ),
        Err(e) => println!(
            ":: svsettle: nothing reconciled or queued ({e:#}): fix the configuration, then run svsettle reconcile --all"
        ),
    }
}

/// " [name version]": the package a service's queued hints name, else the one its
/// history last recorded; "" when unknown (no `alpm` feature, manual hints).
fn package_of(db: Option<&Db>, domain: &str, service: &str) -> String {
    let Some(db) = db else {
        return String::new();
    };
    let from_hints = db
        .hint_packages(domain, service)
        .ok()
        .and_then(|p| p.into_iter().next());
    let pkg = from_hints.or_else(|| {
        db.history(50, Some(service))
            .ok()?
            .into_iter()
            .rev()
            .filter(|r| r.domain == domain)
            .find_map(|r| r.package)
    });
    pkg.map(|p| format!(" [{p}]")).unwrap_or_default()
}

/// Splits "HEAD: REST" at the first ": " outside parentheses.
fn split_outside_parens(text: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ':' if depth == 0 && text[i + 1..].starts_with(' ') => {
                return Some((&text[..i], &text[i + 2..]));
            }
            _ => {}
        }
    }
    None
}

/// An error message on one line of the package manager's output: TOML errors carry a
/// source excerpt (`7 | bogus = 1`, `  | ^^^^^`) that is dropped, the rest joined.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('|')
                && !l
                    .split_once(" |")
                    .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// The hook's lines for the package manager's output: one summary, sorted by what was
/// done then by name (`restarted foo (run changed); 2 services unchanged`), then the
/// full text of each failure and conflict (with its package when known).
fn hook_summary(r: &Report) -> Vec<String> {
    const ORDER: [&str; 10] = [
        "restarted",
        "updated",
        "created",
        "removed",
        "kept",
        "resolved",
        "pending",
        "excluded",
        "conflict",
        "failed",
    ];
    let rank = |k: &str| ORDER.iter().position(|x| *x == k).unwrap_or(ORDER.len());
    let mut lines: Vec<&reconcile::Line> = r.lines.iter().collect();
    lines.sort_by(|a, b| {
        (rank(a.kind), &a.service, &a.text).cmp(&(rank(b.kind), &b.service, &b.text))
    });
    let mut items: Vec<String> = lines
        .iter()
        .map(|l| match l.kind {
            "failed" | "conflict" => format!("{} {}", l.kind, l.service),
            // "VERB NAME[ (HOW)]: WHY" -> "VERB NAME (HOW; WHY)"
            _ => match split_outside_parens(&l.text) {
                Some((head, why)) => match head.strip_suffix(')') {
                    Some(h) => format!("{h}; {why})"),
                    None => format!("{head} ({why})"),
                },
                None => l.text.clone(),
            },
        })
        .collect();
    if r.unchanged > 0 {
        items.push(format!(
            "{} service{} unchanged",
            r.unchanged,
            if r.unchanged == 1 { "" } else { "s" }
        ));
    }
    let mut out = vec![if items.is_empty() {
        "nothing to do".to_string()
    } else {
        items.join("; ")
    }];
    for l in lines
        .iter()
        .filter(|l| l.kind == "failed" || l.kind == "conflict")
    {
        let pkg = l
            .package
            .as_deref()
            .map(|p| format!(" [{p}]"))
            .unwrap_or_default();
        out.push(format!("{}{pkg}", l.text));
    }
    out
}

/// "2026-12-07 06:40:01" (UTC) from Unix seconds.
pub fn fmt_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn status(cfg: &Config, out: &Out) -> Result<Exit> {
    let db = Db::open_read_only(&cfg.state_dir.host)?;
    let pending = db
        .as_ref()
        .map(|d| d.pending())
        .transpose()?
        .unwrap_or_default();
    let conflicts = db
        .as_ref()
        .map(|d| d.conflicts())
        .transpose()?
        .unwrap_or_default();
    let deferred = db
        .as_ref()
        .map(|d| d.deferred())
        .transpose()?
        .unwrap_or_default();
    let journal = db
        .as_ref()
        .map(|d| d.journal())
        .transpose()?
        .unwrap_or_default();
    let problems = db
        .as_ref()
        .map(|d| d.problems())
        .transpose()?
        .unwrap_or_default();
    let last = db.as_ref().map(|d| d.last_run()).transpose()?.flatten();
    let in_progress = crate::settle::transaction_in_progress(&cfg.root);
    if out.json {
        let v = serde_json::json!({
            "config": cfg.source,
            "domains": cfg.domains.iter().map(|d| serde_json::json!({
                "name": d.name, "backend": d.backend, "stock": d.stock.inner, "live": d.live.inner,
                "scan": d.scan.inner, "skipped": d.skipped,
            })).collect::<Vec<_>>(),
            "pending": pending,
            "conflicts": conflicts,
            "deferred": deferred.iter().map(|(d, s, r)| serde_json::json!({"domain": d, "service": s, "reason": r})).collect::<Vec<_>>(),
            "interrupted": journal.iter().map(|j| serde_json::json!({"domain": j.plan.domain, "service": j.plan.name, "action": j.plan.action, "step": j.step})).collect::<Vec<_>>(),
            "problems": problems,
            "last_reconcile": last,
            "transaction_in_progress": in_progress,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Done);
    }
    println!("config: {}", cfg.source);
    for d in &cfg.domains {
        match &d.skipped {
            Some(why) => println!("domain {}: skipped ({why})", d.name),
            None => println!(
                "domain {} ({}): stock {} -> live {}, scan {}",
                d.name,
                d.backend.as_str(),
                d.stock.inner.display(),
                d.live.inner.display(),
                d.scan.inner.display()
            ),
        }
    }
    if let Some(pm) = in_progress {
        println!("package transaction in progress: {pm}");
    }
    if pending.is_empty() {
        println!("pending: none");
    } else {
        let names: Vec<String> = pending
            .iter()
            .map(|p| {
                if p.service.is_empty() {
                    format!("{} (whole domain)", p.domain)
                } else {
                    format!(
                        "{}{}",
                        p.service,
                        package_of(db.as_ref(), &p.domain, &p.service)
                    )
                }
            })
            .collect();
        println!("pending: {} ({})", names.len(), names.join(", "));
    }
    if conflicts.is_empty() {
        println!("conflicts: none");
    } else {
        println!("conflicts:");
        for c in &conflicts {
            let what = if c.conflict.path == "." {
                "live directory removed by the admin".to_string()
            } else {
                c.conflict.path.clone()
            };
            println!(
                "  {}{}: {what} (live kept; svsettle diff {}, svsettle resolve {} --keep-live|--take-stock)",
                c.service,
                package_of(db.as_ref(), &c.domain, &c.service),
                c.service,
                c.service
            );
        }
    }
    if !deferred.is_empty() {
        println!("pending a manual restart:");
        for (_, s, r) in &deferred {
            println!("  {s}: {r}");
        }
    }
    if !journal.is_empty() {
        println!("interrupted (finished by the next reconcile):");
        for j in &journal {
            println!(
                "  {}: {} at step {}",
                j.plan.name,
                j.plan.action.as_str(),
                j.step.as_str()
            );
        }
    }
    if !problems.is_empty() {
        println!("problems since the last clean reconcile:");
        for p in problems.iter().rev() {
            let who = match (&p.domain, &p.service) {
                (Some(d), Some(s)) => format!("{d}/{s}{}: ", package_of(db.as_ref(), d, s)),
                _ => String::new(),
            };
            println!("  {} {}: {who}{}", fmt_time(p.time), p.source, p.message);
        }
    }
    match last {
        Some(r) => println!(
            "last reconcile: {} ({}): {}",
            fmt_time(r.started),
            r.trigger,
            r.summary.as_deref().unwrap_or("interrupted")
        ),
        None => println!("last reconcile: never"),
    }
    Ok(Exit::Done)
}

fn history(cfg: &Config, service: Option<&str>, limit: usize, out: &Out) -> Result<Exit> {
    let rows = match Db::open_read_only(&cfg.state_dir.host)? {
        Some(db) => db.history(limit, service)?,
        None => Vec::new(),
    };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Exit::Done);
    }
    for r in rows {
        let pkg = r
            .package
            .as_deref()
            .map(|p| format!(" [{p}]"))
            .unwrap_or_default();
        println!("{} {}{pkg}", fmt_time(r.time), r.detail);
    }
    Ok(Exit::Done)
}

fn diff(cfg: &Config, spec: &str) -> Result<Exit> {
    let (dom, name) = match spec.split_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, spec),
    };
    crate::names::check_service_name(name)?;
    let domain = cfg
        .domains
        .iter()
        .filter(|d| dom.is_none_or(|x| x == d.name))
        .find(|d| d.stock.host.join(name).exists() || d.live.host.join(name).exists())
        .with_context(|| {
            format!("unknown service {spec}: not in any configured stock or live tree")
        })?;
    let stock = tree::read_stock(&domain.stock.host, name, cfg.max_file_size)?;
    let live = tree::read_live(&domain.live.host, name)?;
    let empty = tree::Tree::new();
    let s = stock.as_ref().map(|s| &s.tree).unwrap_or(&empty);
    let l = live.as_ref().unwrap_or(&empty);
    let sdir = domain.stock.inner.join(name);
    let ldir = domain.live.inner.join(name);
    let mut keys: Vec<&String> = s.keys().chain(l.keys()).collect();
    keys.sort();
    keys.dedup();
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    let mut same = true;
    for k in keys {
        match (s.get(k), l.get(k)) {
            (a, b) if a == b => {}
            (Some(a), None) => {
                same = false;
                writeln!(
                    w,
                    "only in stock: {} ({})",
                    sdir.join(k).display(),
                    a.describe()
                )?;
            }
            (None, Some(b)) => {
                same = false;
                writeln!(
                    w,
                    "only in live: {} ({})",
                    ldir.join(k).display(),
                    b.describe()
                )?;
            }
            (
                Some(Entry::File {
                    mode: ma, hash: ha, ..
                }),
                Some(Entry::File {
                    mode: mb, hash: hb, ..
                }),
            ) => {
                same = false;
                if ma != mb {
                    writeln!(w, "mode of {k}: stock {ma:04o}, live {mb:04o}")?;
                }
                if ha != hb {
                    let a = std::fs::read(domain.stock.host.join(name).join(k)).unwrap_or_default();
                    let b = std::fs::read(domain.live.host.join(name).join(k)).unwrap_or_default();
                    match (std::str::from_utf8(&a), std::str::from_utf8(&b)) {
                        (Ok(a), Ok(b)) => {
                            let d = similar::TextDiff::from_lines(a, b);
                            let sh = format!("stock {}", sdir.join(k).display());
                            let lh = format!("live {}", ldir.join(k).display());
                            write!(w, "{}", d.unified_diff().context_radius(3).header(&sh, &lh))?;
                        }
                        _ => writeln!(w, "binary files differ: {k}")?,
                    }
                }
            }
            (Some(a), Some(b)) => {
                same = false;
                let show = |e: &Entry| match e {
                    Entry::Symlink { target } => format!("symlink -> {target}"),
                    Entry::Dir { mode } => format!("directory {mode:04o}"),
                    Entry::File { .. } => "file".into(),
                };
                writeln!(w, "{k}: stock {}, live {}", show(a), show(b))?;
            }
            (None, None) => {}
        }
    }
    if same {
        writeln!(w, "{name}: live matches stock")?;
    }
    Ok(Exit::Done)
}

fn print_config(cfg: &Config) {
    println!(
        "# effective configuration ({} merged over the embedded default)",
        cfg.source
    );
    println!("root = {:?}", cfg.root.display().to_string());
    println!(
        "state-dir = {:?}",
        cfg.state_dir.inner.display().to_string()
    );
    println!("max-file-size = {}", cfg.max_file_size);
    for d in &cfg.domains {
        println!();
        println!("[domain.{}]", d.name);
        if let Some(why) = &d.skipped {
            println!("# skipped on this machine: {why}");
        }
        println!("backend = {:?}", d.backend.as_str());
        println!(
            "mode = {:?}",
            serde_json::to_value(d.mode)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        );
        println!("stock = {:?}", d.stock.inner.display().to_string());
        println!("live = {:?}", d.live.inner.display().to_string());
        println!("scan = {:?}", d.scan.inner.display().to_string());
        if let Some(c) = &d.compiled {
            println!("compiled = {:?}", c.inner.display().to_string());
        }
        if let Some(l) = &d.livedir {
            println!("livedir = {:?}", l.inner.display().to_string());
        }
        let restart = match d.policy.restart {
            crate::config::RestartPolicy::OnChange => "on-change",
            crate::config::RestartPolicy::Manual => "manual",
        };
        println!("restart = {restart:?}");
        println!("enable-new = {}", d.policy.enable_new);
        println!("exclude = {:?}", d.policy.exclude);
        println!("stop-timeout = {}", d.policy.stop_timeout.as_secs());
        println!("start-timeout = {}", d.policy.start_timeout.as_secs());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_format() {
        assert_eq!(super::fmt_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::fmt_time(1_796_625_601), "2026-12-07 06:40:01");
    }

    #[test]
    fn hook_summary_is_sorted_and_short() {
        use crate::reconcile::{Line, Report};
        let line = |kind: &'static str, service: &str, text: &str, package: Option<&str>| Line {
            domain: "s6".into(),
            service: service.into(),
            kind,
            text: text.into(),
            package: package.map(String::from),
        };
        let r = Report {
            lines: vec![
                line(
                    "failed",
                    "bad",
                    "failed bad: stock symlink run points outside",
                    Some("bad 1-1"),
                ),
                line("restarted", "zed", "restarted zed: run changed", None),
                line(
                    "updated",
                    "down",
                    "updated down (down, left down): finish changed",
                    None,
                ),
                line(
                    "restarted",
                    "foo",
                    "restarted foo/log: log/run changed",
                    None,
                ),
                line("created", "new", "created new (enabled)", None),
                line(
                    "created",
                    "off",
                    "created off (not enabled: enable-new = false)",
                    None,
                ),
            ],
            unchanged: 2,
            ..Report::default()
        };
        assert_eq!(
            super::hook_summary(&r),
            [
                "restarted foo/log (log/run changed); restarted zed (run changed); \
                 updated down (down, left down; finish changed); created new (enabled); \
                 created off (not enabled: enable-new = false); failed bad; 2 services unchanged",
                "failed bad: stock symlink run points outside [bad 1-1]",
            ]
        );
        assert_eq!(
            super::hook_summary(&Report {
                unchanged: 1,
                ..Report::default()
            }),
            ["1 service unchanged"]
        );
        assert_eq!(super::hook_summary(&Report::default()), ["nothing to do"]);
    }

    #[test]
    fn errors_fit_on_one_line() {
        let toml = "config /etc/svsettle.toml: TOML parse error at line 7, column 1\n  |\n7 | bogus = 1\n  | ^^^^^\nunknown field `bogus`, expected one of `enabled`";
        assert_eq!(
            super::one_line(toml),
            "config /etc/svsettle.toml: TOML parse error at line 7, column 1: unknown field `bogus`, expected one of `enabled`"
        );
    }
}
