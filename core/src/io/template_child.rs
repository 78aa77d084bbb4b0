//! Chat templates render in a child process under a memory cap (Linux).
//!
//! A chat template comes with a model from strangers. Its instructions are bounded by minijinja's
//! fuel, but its memory is not: doubling a string in a loop (`{% set ns.s = ns.s ~ ns.s %}`) takes
//! one instruction per doubling, 27 doublings asked 335 MB and 40 would ask a terabyte (fuzz
//! finding), and minijinja has no memory limit to set. So templates render in a child forked once
//! per process, whose address space is capped at what it had at the fork plus
//! [`RENDER_MEMORY`] (`RLIMIT_AS`): a template that asks more kills only the child, and the render
//! is refused with a one-line error. The child lives until the parent exits (it reads requests
//! until its pipe closes) and is forked again after a refusal.
//!
//! Why fork and not a thread: a process is the only unit whose memory Linux can cap, and Rust
//! cannot recover from a failed allocation (it aborts). Forked once, not per render: forking a
//! process that holds a model copies its page tables (tens of ms for 8B weights), while a request
//! through a pipe costs microseconds.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Mutex;

/// Address space a render may add to the child's size at the fork.
pub const RENDER_MEMORY: u64 = 256 << 20;

/// What one render needs: the template, BOS and EOS texts, the user message.
pub struct Request<'a> {
    pub tpl: &'a str,
    pub bos: Option<&'a str>,
    pub eos: Option<&'a str>,
    pub user: &'a str,
}

/// The renderer: the child's pid and the two ends of its pipes.
struct Child {
    pid: libc::pid_t,
    to: File,
    from: File,
}

/// How long a render may take before its child is killed.
const REPLY_TIMEOUT_MS: i32 = 60_000;

static CHILD: Mutex<Option<Child>> = Mutex::new(None);

/// What a render gives: the text, or the error's message.
pub type Rendered = std::result::Result<String, String>;

/// Renders through the child (forked at the first call, or after one was refused); `serve` is
/// what the child runs for a request: the in-process render.
pub fn render(req: &Request, serve: fn(&Request) -> Rendered) -> Rendered {
    let mut slot = CHILD.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(spawn(serve)?);
    }
    let child = slot.as_mut().expect("spawned above");
    match exchange(child, req) {
        Ok(rendered) => rendered,
        Err(_) => {
            // The child died (its memory cap, or a crash) or is stuck: end and reap it, and fork
            // anew next time.
            let dead = slot.take().expect("present");
            unsafe { libc::kill(dead.pid, libc::SIGKILL) };
            drop((dead.to, dead.from));
            unsafe { libc::waitpid(dead.pid, std::ptr::null_mut(), 0) };
            Err(format!(
                "chat_template needs more than {} MiB of memory to render one message; refused",
                RENDER_MEMORY >> 20
            ))
        }
    }
}

/// Sends `req`, reads the reply: Ok(render's result), or Err when the child is gone.
fn exchange(c: &mut Child, req: &Request) -> std::io::Result<Rendered> {
    let mut msg = Vec::new();
    for field in [Some(req.tpl), req.bos, req.eos, Some(req.user)] {
        put(&mut msg, field);
    }
    c.to.write_all(&msg)?;
    wait_readable(&c.from)?;
    let mut tag = [0u8; 1];
    c.from.read_exact(&mut tag)?;
    let text = get(&mut c.from)?.unwrap_or_default();
    Ok(if tag[0] == 0 { Ok(text) } else { Err(text) })
}

/// Waits for the child's reply up to [`REPLY_TIMEOUT_MS`] (fuel bounds a render to well under a
/// second; a child that does not answer is stuck, e.g. on a lock another thread held at the fork).
fn wait_readable(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        match unsafe { libc::poll(&mut p, 1, REPLY_TIMEOUT_MS) } {
            1 => return Ok(()),
            0 => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "renderer")),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(std::io::Error::last_os_error()),
        }
    }
}

/// A field on the wire: u32 length (u32::MAX for none), then its bytes.
fn put(out: &mut Vec<u8>, field: Option<&str>) {
    match field {
        Some(s) => {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

fn get(r: &mut File) -> std::io::Result<Option<String>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len == u32::MAX {
        return Ok(None);
    }
    let mut bytes = vec![0u8; len as usize];
    r.read_exact(&mut bytes)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn pipe() -> std::result::Result<(File, File), String> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "chat_template not rendered: cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn spawn(serve: fn(&Request) -> Rendered) -> std::result::Result<Child, String> {
    let (req_r, req_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!(
            "chat_template not rendered: cannot fork its renderer: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        drop((req_w, rep_r));
        child_main(req_r, rep_w, serve);
    }
    drop((req_r, rep_w));
    Ok(Child {
        pid,
        to: req_w,
        from: rep_r,
    })
}

/// The child: caps its address space, serves requests until the pipe closes, and exits without
/// running the parent's exit handlers or destructors (they belong to the parent).
fn child_main(mut req: File, mut rep: File, serve: fn(&Request) -> Rendered) -> ! {
    // Its output would be the allocator's abort message at the cap: the parent says it in one line.
    quiet();
    own_signals();
    let capped = cap_address_space();
    let serve = if capped { serve } else { uncapped };
    while let Ok(reply) = serve_one(&mut req, serve) {
        if rep.write_all(&reply).is_err() {
            break;
        }
    }
    let _ = (req.into_raw_fd(), rep.into_raw_fd());
    unsafe { libc::_exit(0) }
}

fn serve_one(req: &mut File, serve: fn(&Request) -> Rendered) -> std::io::Result<Vec<u8>> {
    let mut fields = [None, None, None, None];
    for f in &mut fields {
        *f = get(req)?;
    }
    let [tpl, bos, eos, user] = fields;
    let r = Request {
        tpl: tpl.as_deref().unwrap_or_default(),
        bos: bos.as_deref(),
        eos: eos.as_deref(),
        user: user.as_deref().unwrap_or_default(),
    };
    // A panic inside the template engine is an error of this render, not the end of the child.
    let result = std::panic::catch_unwind(|| serve(&r))
        .unwrap_or_else(|_| Err("chat_template: the template engine panicked".to_string()));
    let mut out = vec![u8::from(result.is_err())];
    let text = match &result {
        Ok(s) | Err(s) => s.as_str(),
    };
    put(&mut out, Some(text));
    Ok(out)
}

/// The parent's signal handlers are not the child's: Ctrl-C reaches the whole process group and
/// is the parent's to act on (the child ends when the parent does), and a fault or abort ends the
/// child the default way (a fuzzer's handlers, inherited, would report the parent's input).
fn own_signals() {
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        for sig in [
            libc::SIGABRT,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTERM,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Points the child's stdout and stderr at /dev/null.
fn quiet() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

/// What the child answers when it could not cap its memory: no template runs uncapped.
fn uncapped(_: &Request) -> Rendered {
    Err("chat_template not rendered: the renderer's memory cannot be capped (RLIMIT_AS)".to_string())
}

/// RLIMIT_AS = the child's address space now + RENDER_MEMORY; false when that cannot be set.
fn cap_address_space() -> bool {
    let now = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(|pages| pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64);
    let Some(now) = now else { return false };
    let lim = libc::rlimit {
        rlim_cur: now + RENDER_MEMORY,
        rlim_max: now + RENDER_MEMORY,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) == 0 }
}
