//! Signal names as SSH uses them (RFC 4254 §6.10: the name without `SIG`).

use nix::sys::signal::Signal;

/// The signal named `name` (`INT`, `TERM`, …; `SIG` prefix accepted).
pub fn from_name(name: &str) -> Option<Signal> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    let signal = match name {
        "ABRT" => Signal::SIGABRT,
        "ALRM" => Signal::SIGALRM,
        "FPE" => Signal::SIGFPE,
        "HUP" => Signal::SIGHUP,
        "ILL" => Signal::SIGILL,
        "INT" => Signal::SIGINT,
        "KILL" => Signal::SIGKILL,
        "PIPE" => Signal::SIGPIPE,
        "QUIT" => Signal::SIGQUIT,
        "SEGV" => Signal::SIGSEGV,
        "TERM" => Signal::SIGTERM,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        "CONT" => Signal::SIGCONT,
        "STOP" => Signal::SIGSTOP,
        "TSTP" => Signal::SIGTSTP,
        "WINCH" => Signal::SIGWINCH,
        _ => return None,
    };
    Some(signal)
}

/// The SSH name of signal number `signal` (`INT` for 2); unknown numbers as `SIG<n>`.
pub fn name_of(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(signal) => signal
            .as_str()
            .strip_prefix("SIG")
            .unwrap_or(signal.as_str())
            .to_owned(),
        Err(_) => format!("SIG{signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["INT", "TERM", "HUP", "KILL", "USR1"] {
            let signal = from_name(name).unwrap();
            assert_eq!(name_of(signal as i32), name);
        }
        assert_eq!(from_name("SIGINT"), Some(Signal::SIGINT));
        assert_eq!(from_name("NOPE"), None);
    }
}
