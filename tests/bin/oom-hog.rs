//! Allocates memory until the kernel OOM-kills it: the victim of the
//! end-to-end tests, in the shapes real workloads take.
//!
//! ```text
//! oom-hog (--cgroup DIR | --in-container) [--mb N] [--comm NAME] [--fork | --pidns] [--pause]
//!         [--uid UID] [--oom-score-adj ADJ]
//! oom-hog --cgroup DIR --on-sigterm (die | ignore) [--sigterm-mb M] [--mb N] [--comm NAME]
//!         [--uid UID] [--oom-score-adj ADJ]
//! oom-hog --pause
//! oom-hog [--cgroup DIR] --comm NAME (--kill PID | --kill-children N)
//! oom-hog --cgroup DIR --reclaim FILES_DIR [--mb N] [--files-mb M] [--churn-kb K] [--seconds S]
//!         [--then-oom]
//! ```
//! It first moves itself into the memory cgroup at DIR (so nothing runs
//! unlimited; `--in-container` says it already runs in a container's
//! limited cgroup), then either allocates itself, or forks a child that does
//! (`--fork`: a worker dies, its parent lives on), or forks the init process
//! of a new pid namespace that does (`--pidns`: the container's PID 1 dies).
//! With a child, the parent prints `child <pid>` and, when the child is
//! gone, `child <pid> killed by signal <n>`, and exits 0.
//! `--uid` and `--oom-score-adj` give the allocating process that uid and
//! `oom_score_adj` (set by the still-root process before it allocates).
//!
//! `--pause` makes it sleep until killed instead of exiting once the child is
//! gone, as a surviving worker parent does; alone, it only sleeps: the
//! stand-in for a pod sandbox's pause process in the container tests.
//! `--on-sigterm` waits for a userspace OOM killer: it touches N MiB (so
//! a killer sees resident memory), prints `waiting <pid>` and sleeps until
//! killed. `die` leaves SIGTERM's default action (the process dies of it);
//! `ignore` catches it, prints `sigterm`, touches M more MiB (so the
//! node's available memory drops and a killer escalates) and sleeps on.
//! `--kill` plays a userspace OOM killer: it joins DIR when given, takes the
//! name NAME and SIGKILLs PID. `--kill-children N` does so to N children of
//! its own (they sleep until killed), one after the other, and reaps them:
//! a killer, or an impostor's flood.
//!
//! `--reclaim` holds a memory cgroup at its limit with steady reclaim, the
//! state before an OOM kill: it touches N MiB of anonymous memory, writes M
//! MiB of files into FILES_DIR (on a disk, not tmpfs: page cache that can be
//! reclaimed), and re-reads them for S seconds, so the kernel reclaims page
//! cache all the time. Then it removes the files and exits 0, or with
//! `--then-oom` allocates until the OOM killer kills it (first setting the
//! cgroup's v2 `memory.high` back to `max`, so the limit is what it hits).
//! `--churn-kb K` also frees and touches again K KiB of anonymous memory in
//! every round, so each round charges the cgroup anew: above a v2
//! `memory.high` every 64 pages charged are throttled (reclaim, then a
//! sleep that PSI counts as a memory stall), all the time and not only
//! while the first N MiB are touched; the VM kernels, whose only
//! filesystems are RAM (no page cache to reclaim), get their pressure so.

use std::{
    ffi::{CString, OsString},
    io::Write,
    os::unix::ffi::OsStrExt,
    process::exit,
};

struct Args {
    cgroup: Option<String>,
    megabytes: usize,
    /// Any bytes but NUL (the tests give names that are not UTF-8).
    comm: Option<OsString>,
    fork: bool,
    pidns: bool,
    in_container: bool,
    pause: bool,
    kill: Option<i32>,
    kill_children: Option<u32>,
    uid: Option<u32>,
    oom_score_adj: Option<i32>,
    reclaim: Option<String>,
    files_megabytes: usize,
    churn_kb: usize,
    seconds: u64,
    then_oom: bool,
    on_sigterm: Option<String>,
    sigterm_megabytes: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        cgroup: None,
        megabytes: 1024,
        comm: None,
        fork: false,
        pidns: false,
        in_container: false,
        pause: false,
        kill: None,
        kill_children: None,
        uid: None,
        oom_score_adj: None,
        reclaim: None,
        files_megabytes: 64,
        churn_kb: 0,
        seconds: 10,
        then_oom: false,
        on_sigterm: None,
        sigterm_megabytes: 0,
    };
    let mut it = std::env::args_os().skip(1);
    let next_text = |it: &mut std::iter::Skip<std::env::ArgsOs>| {
        it.next()
            .and_then(|v| v.into_string().ok())
            .unwrap_or_else(|| usage())
    };
    while let Some(arg) = it.next() {
        match arg.to_str().unwrap_or("") {
            "--cgroup" => args.cgroup = Some(next_text(&mut it)),
            "--mb" => args.megabytes = next_text(&mut it).parse().unwrap_or_else(|_| usage()),
            "--comm" => args.comm = Some(it.next().unwrap_or_else(|| usage())),
            "--fork" => args.fork = true,
            "--pidns" => args.pidns = true,
            "--in-container" => args.in_container = true,
            "--pause" => args.pause = true,
            "--uid" => args.uid = Some(next_text(&mut it).parse().unwrap_or_else(|_| usage())),
            "--oom-score-adj" => {
                args.oom_score_adj = Some(next_text(&mut it).parse().unwrap_or_else(|_| usage()))
            }
            "--reclaim" => args.reclaim = Some(next_text(&mut it)),
            "--files-mb" => {
                args.files_megabytes = next_text(&mut it).parse().unwrap_or_else(|_| usage())
            }
            "--churn-kb" => args.churn_kb = next_text(&mut it).parse().unwrap_or_else(|_| usage()),
            "--seconds" => args.seconds = next_text(&mut it).parse().unwrap_or_else(|_| usage()),
            "--then-oom" => args.then_oom = true,
            "--on-sigterm" => args.on_sigterm = Some(next_text(&mut it)),
            "--sigterm-mb" => {
                args.sigterm_megabytes = next_text(&mut it).parse().unwrap_or_else(|_| usage())
            }
            "--kill" => args.kill = Some(next_text(&mut it).parse().unwrap_or_else(|_| usage())),
            "--kill-children" => {
                args.kill_children = Some(next_text(&mut it).parse().unwrap_or_else(|_| usage()))
            }
            _ => usage(),
        }
    }
    let allocates = args.kill.is_none()
        && args.kill_children.is_none()
        && (args.fork || args.pidns || !args.pause);
    if allocates && args.cgroup.is_none() && !args.in_container {
        usage();
    }
    args
}

fn usage() -> ! {
    eprintln!(
        "usage: oom-hog (--cgroup DIR | --in-container) [--mb N] [--comm NAME] [--fork | --pidns] [--pause] [--uid UID] [--oom-score-adj ADJ]"
    );
    eprintln!("       oom-hog --cgroup DIR --on-sigterm (die | ignore) [--sigterm-mb M] [--mb N] [--comm NAME] [--uid UID] [--oom-score-adj ADJ]");
    eprintln!("       oom-hog --pause");
    eprintln!("       oom-hog [--cgroup DIR] --comm NAME (--kill PID | --kill-children N)");
    eprintln!("       oom-hog --cgroup DIR --reclaim FILES_DIR [--mb N] [--files-mb M] [--churn-kb K] [--seconds S] [--then-oom]");
    exit(2)
}

fn main() {
    let args = parse_args();
    // Join the cgroup before anything is allocated (or killed).
    if let Some(cgroup) = &args.cgroup {
        std::fs::write(format!("{cgroup}/cgroup.procs"), "0")
            .unwrap_or_else(|e| fail(&format!("cannot join {cgroup}: {e}")));
    }
    if let Some(pid) = args.kill {
        set_comm(args.comm.as_ref());
        sigkill(pid);
        return;
    }
    if let Some(children) = args.kill_children {
        set_comm(args.comm.as_ref());
        kill_children(children);
        return;
    }
    if let Some(mode) = &args.on_sigterm {
        become_victim(&args);
        await_killer(mode, &args);
    }
    if let Some(dir) = &args.reclaim {
        become_victim(&args);
        reclaim(&args, dir);
    }
    if args.pidns {
        // SAFETY: unshare has no memory-safety preconditions.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            fail(&format!(
                "unshare(CLONE_NEWPID): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if args.fork || args.pidns {
        run_child_and_wait(&args);
    } else if !args.pause {
        become_victim(&args);
        allocate(args.megabytes);
    }
    if args.pause {
        pause_forever();
    }
}

fn sigkill(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        fail(&format!("kill {pid}: {}", std::io::Error::last_os_error()));
    }
}

/// Forks `count` sleeping children, SIGKILLs and reaps each; prints
/// `killed <pid>` per child.
fn kill_children(count: u32) {
    for _ in 0..count {
        // SAFETY: single-threaded; the child only sleeps.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            fail("fork failed");
        }
        if pid == 0 {
            pause_forever();
        }
        sigkill(pid);
        let mut status = 0;
        // SAFETY: a valid status pointer for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        println!("killed {pid}");
    }
}

fn run_child_and_wait(args: &Args) {
    // SAFETY: the child only calls async-signal-safe code paths plus its own
    // allocation loop; this program is single-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail("fork failed");
    }
    if pid == 0 {
        become_victim(args);
        allocate(args.megabytes);
    }
    println!("child {pid}");
    std::io::stdout().flush().ok();
    let mut status = 0;
    // SAFETY: a valid status pointer for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        println!("child {pid} killed by signal {}", libc::WTERMSIG(status));
    } else {
        println!("child {pid} exited with {}", libc::WEXITSTATUS(status));
    }
}

/// Touches `megabytes` of anonymous memory a page at a time, then waits to be
/// killed; the kernel kills it first when the cgroup limit is lower.
fn allocate(megabytes: usize) -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..megabytes {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
    eprintln!("oom-hog: allocated {megabytes} MiB without being killed");
    pause_forever()
}

/// Set by the SIGTERM handler of `--on-sigterm ignore`.
static SIGTERMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    SIGTERMED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `--on-sigterm` (see the module doc).
fn await_killer(mode: &str, args: &Args) -> ! {
    match mode {
        "die" => {}
        "ignore" => {
            // SAFETY: the handler only stores to an atomic.
            unsafe {
                libc::signal(
                    libc::SIGTERM,
                    on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
                )
            };
        }
        _ => usage(),
    }
    // A uid change made it undumpable, which hides its /proc from a
    // killer of the same uid under hidepid; a process started as that
    // user would not be.
    // SAFETY: PR_SET_DUMPABLE takes a plain integer.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1) };
    let mut held = touch(args.megabytes);
    println!("waiting {}", std::process::id());
    std::io::stdout().flush().ok();
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
        if SIGTERMED.swap(false, std::sync::atomic::Ordering::SeqCst) {
            println!("sigterm");
            std::io::stdout().flush().ok();
            held.extend(touch(args.sigterm_megabytes));
        }
    }
}

/// `megabytes` MiB of anonymous memory, every page touched.
fn touch(megabytes: usize) -> Vec<Vec<u8>> {
    (0..megabytes)
        .map(|_| {
            let mut chunk = vec![0u8; 1 << 20];
            for page in chunk.chunks_mut(4096) {
                page[0] = 1;
            }
            std::hint::black_box(chunk)
        })
        .collect()
}

/// Holds anon memory and re-reads a file set so the cgroup reclaims page
/// cache without pause (see the module doc).
fn reclaim(args: &Args, dir: &str) -> ! {
    use std::io::Read;
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("mkdir {dir:?}: {e}")));
    let mut anon: Vec<Vec<u8>> = Vec::new();
    for _ in 0..args.megabytes.min(1 << 20) {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        anon.push(std::hint::black_box(chunk));
    }
    const FILE_MB: usize = 4;
    let files: Vec<_> = (0..args.files_megabytes.div_ceil(FILE_MB))
        .map(|i| dir.join(format!("reclaim-{}-{i}", std::process::id())))
        .collect();
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + 3) as u8).collect();
    for file in &files {
        let mut f = std::fs::File::create(file).unwrap_or_else(|e| fail(&format!("{file:?}: {e}")));
        for _ in 0..FILE_MB {
            f.write_all(&block)
                .unwrap_or_else(|e| fail(&format!("write {file:?}: {e}")));
        }
        // Clean page cache: reclaim drops it without waiting for writeback.
        f.sync_all().ok();
    }
    println!("reclaiming");
    std::io::stdout().flush().ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.seconds);
    let mut buf = vec![0u8; 1 << 20];
    let churn = Churn::new(args.churn_kb * 1024);
    while std::time::Instant::now() < deadline {
        if let Some(churn) = &churn {
            churn.again();
        }
        for file in &files {
            if let Ok(mut f) = std::fs::File::open(file) {
                while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
    }
    // Free the anonymous memory first: deleting files needs some.
    drop(std::hint::black_box(anon));
    for file in &files {
        let _ = std::fs::remove_file(file);
    }
    if args.then_oom {
        // On v2 a memory.high below the limit (the tests' way to make
        // pressure) would throttle the growth for minutes: lift it, so the
        // limit is what it hits.
        if let Some(cgroup) = &args.cgroup {
            let _ = std::fs::write(format!("{cgroup}/memory.high"), "max");
        }
        allocate(1 << 20);
    }
    println!("done");
    exit(0)
}

/// Anonymous memory given back and touched again: every round charges its
/// pages to the cgroup anew.
struct Churn {
    at: *mut u8,
    len: usize,
}

impl Churn {
    fn new(len: usize) -> Option<Self> {
        if len == 0 {
            return None;
        }
        // SAFETY: a new private anonymous mapping; no existing memory is touched.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if at == libc::MAP_FAILED {
            fail(&format!("mmap {len}: {}", std::io::Error::last_os_error()));
        }
        Some(Self { at: at.cast(), len })
    }

    /// Drops the pages (uncharged) and faults them in again (charged).
    fn again(&self) {
        // SAFETY: `at..at+len` is our own mapping; MADV_DONTNEED on private
        // anonymous memory only zeroes it.
        unsafe { libc::madvise(self.at.cast(), self.len, libc::MADV_DONTNEED) };
        for offset in (0..self.len).step_by(4096) {
            // SAFETY: within the mapping, which is readable and writable.
            unsafe { std::ptr::write_volatile(self.at.add(offset), 1) };
        }
    }
}

/// Sleeps until a signal kills it (as a container's PID 1, only SIGKILL does).
fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Takes the name, `oom_score_adj` and uid the victim should have; the
/// uid last, since only root may set the rest.
fn become_victim(args: &Args) {
    set_comm(args.comm.as_ref());
    if let Some(adj) = args.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .unwrap_or_else(|e| fail(&format!("cannot set oom_score_adj {adj}: {e}")));
    }
    if let (Some(gid), Some(_)) = (args.uid, &args.on_sigterm) {
        // A killer of the same uid sees it under hidepid only with the
        // same gids too: its group is its uid's number, as the killer's.
        // SAFETY: setgroups with no groups reads nothing; setresgid has
        // no memory-safety preconditions.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0
            || unsafe { libc::setresgid(gid, gid, gid) } != 0
        {
            fail(&format!(
                "setresgid({gid}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(uid) = args.uid {
        // SAFETY: setresuid has no memory-safety preconditions.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            fail(&format!(
                "setresuid({uid}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
}

fn set_comm(comm: Option<&OsString>) {
    if let Some(comm) = comm {
        let name = CString::new(comm.as_bytes()).unwrap_or_else(|_| fail("comm has a NUL byte"));
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
}

fn fail(message: &str) -> ! {
    eprintln!("oom-hog: {message}");
    exit(1)
}
