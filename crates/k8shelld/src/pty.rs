//! Pseudo-terminals: open one with the client's size and terminal modes, resize it, and read
//! and write its master side asynchronously.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::pty::{Winsize, openpty};
use nix::sys::termios::{
    ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg, Termios, tcgetattr, tcsetattr,
};
use tokio::io::unix::AsyncFd;

/// The master side of a PTY, readable and writable from async code.
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
    eof_char: u8,
}

/// A new PTY: the master for k8shelld, the slave for the child's stdio.
#[derive(Debug)]
pub struct Pty {
    pub master: PtyMaster,
    pub slave: OwnedFd,
}

/// Opens a PTY of the given size, with SSH-encoded terminal `modes` applied.
pub fn open(size: Winsize, modes: &[u8]) -> io::Result<Pty> {
    let pair = openpty(&size, None).map_err(io::Error::from)?;
    // openpty(3) does not set close-on-exec: without it every later session would inherit
    // this terminal (and could read or type into it, and keep it from hanging up).
    set_cloexec(&pair.master)?;
    set_cloexec(&pair.slave)?;
    let mut termios = tcgetattr(&pair.slave).map_err(io::Error::from)?;
    apply_modes(&mut termios, modes);
    tcsetattr(&pair.slave, SetArg::TCSANOW, &termios).map_err(io::Error::from)?;
    let eof_char = termios.control_chars[libc::VEOF];
    set_nonblocking(&pair.master)?;
    // SAFETY: an `OwnedFd` is a valid open descriptor that stays the same until it is dropped,
    // which happens only with the `AsyncFd` that owns it.
    let fd = unsafe { AsyncFd::register(pair.master) }.map_err(io::Error::from)?;
    Ok(Pty {
        master: PtyMaster { fd, eof_char },
        slave: pair.slave,
    })
}

impl PtyMaster {
    /// Reads what the terminal printed; `Ok(0)` once every slave descriptor is closed.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| read_fd(fd.get_ref(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads only what is already there: `Ok(None)` when nothing is.
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match read_fd(self.fd.get_ref(), buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Types `data` into the terminal.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Types the terminal's end-of-file character (what closing stdin means on a terminal).
    pub async fn send_eof(&self) -> io::Result<()> {
        self.write_all(&[self.eof_char]).await
    }

    /// Sets the window size; the kernel sends SIGWINCH to the foreground process group.
    pub fn resize(&self, size: Winsize) -> io::Result<()> {
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
        let rc = unsafe {
            libc::ioctl(
                self.fd.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ,
                &size as *const Winsize,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The terminal's foreground process group, which receives signals typed or sent.
    pub fn foreground_group(&self) -> io::Result<nix::unistd::Pid> {
        nix::unistd::tcgetpgrp(self.fd.get_ref()).map_err(io::Error::from)
    }
}

/// Reads from a PTY master; EIO (the slave side is closed) means end of file.
fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    match nix::unistd::read(fd.as_fd(), buf) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EIO) => Ok(0),
        Err(e) => Err(io::Error::from(e)),
    }
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// The window size of `cols` × `rows` (pixels optional).
pub fn winsize(cols: u32, rows: u32, width_px: u32, height_px: u32) -> Winsize {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    Winsize {
        ws_col: clamp(cols),
        ws_row: clamp(rows),
        ws_xpixel: clamp(width_px),
        ws_ypixel: clamp(height_px),
    }
}

/// Applies SSH terminal modes (RFC 4254 §8: opcode byte, uint32 value; 0 ends the list).
pub fn apply_modes(termios: &mut Termios, mut modes: &[u8]) {
    while let Some((&opcode, rest)) = modes.split_first() {
        // Opcodes 160 and above have no defined argument length: nothing after them is safe.
        if opcode == 0 || opcode >= 160 || rest.len() < 4 {
            return;
        }
        let value = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        modes = &rest[4..];
        apply_mode(termios, opcode, value);
    }
}

fn apply_mode(t: &mut Termios, opcode: u8, value: u32) {
    let on = value != 0;
    let cc = |t: &mut Termios, index: usize| {
        // 255 (_POSIX_VDISABLE) disables the character.
        t.control_chars[index] = u8::try_from(value).unwrap_or(0);
    };
    match opcode {
        1 => cc(t, libc::VINTR),
        2 => cc(t, libc::VQUIT),
        3 => cc(t, libc::VERASE),
        4 => cc(t, libc::VKILL),
        5 => cc(t, libc::VEOF),
        6 => cc(t, libc::VEOL),
        7 => cc(t, libc::VEOL2),
        8 => cc(t, libc::VSTART),
        9 => cc(t, libc::VSTOP),
        10 => cc(t, libc::VSUSP),
        12 => cc(t, libc::VREPRINT),
        13 => cc(t, libc::VWERASE),
        14 => cc(t, libc::VLNEXT),
        18 => cc(t, libc::VDISCARD),
        30 => t.input_flags.set(InputFlags::IGNPAR, on),
        31 => t.input_flags.set(InputFlags::PARMRK, on),
        32 => t.input_flags.set(InputFlags::INPCK, on),
        33 => t.input_flags.set(InputFlags::ISTRIP, on),
        34 => t.input_flags.set(InputFlags::INLCR, on),
        35 => t.input_flags.set(InputFlags::IGNCR, on),
        36 => t.input_flags.set(InputFlags::ICRNL, on),
        37 => t.input_flags.set(InputFlags::IUCLC, on),
        38 => t.input_flags.set(InputFlags::IXON, on),
        39 => t.input_flags.set(InputFlags::IXANY, on),
        40 => t.input_flags.set(InputFlags::IXOFF, on),
        41 => t.input_flags.set(InputFlags::IMAXBEL, on),
        42 => t.input_flags.set(InputFlags::IUTF8, on),
        50 => t.local_flags.set(LocalFlags::ISIG, on),
        51 => t.local_flags.set(LocalFlags::ICANON, on),
        53 => t.local_flags.set(LocalFlags::ECHO, on),
        54 => t.local_flags.set(LocalFlags::ECHOE, on),
        55 => t.local_flags.set(LocalFlags::ECHOK, on),
        56 => t.local_flags.set(LocalFlags::ECHONL, on),
        57 => t.local_flags.set(LocalFlags::NOFLSH, on),
        58 => t.local_flags.set(LocalFlags::TOSTOP, on),
        59 => t.local_flags.set(LocalFlags::IEXTEN, on),
        60 => t.local_flags.set(LocalFlags::ECHOCTL, on),
        61 => t.local_flags.set(LocalFlags::ECHOKE, on),
        62 => t.local_flags.set(LocalFlags::PENDIN, on),
        70 => t.output_flags.set(OutputFlags::OPOST, on),
        71 => t.output_flags.set(OutputFlags::OLCUC, on),
        72 => t.output_flags.set(OutputFlags::ONLCR, on),
        73 => t.output_flags.set(OutputFlags::OCRNL, on),
        74 => t.output_flags.set(OutputFlags::ONOCR, on),
        75 => t.output_flags.set(OutputFlags::ONLRET, on),
        90 => t.control_flags.set(ControlFlags::CS7, on),
        91 => t.control_flags.set(ControlFlags::CS8, on),
        92 => t.control_flags.set(ControlFlags::PARENB, on),
        93 => t.control_flags.set(ControlFlags::PARODD, on),
        // Speeds (128, 129) and modes Linux lacks are ignored, as sshd does.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ssh_modes_are_applied() {
        let pty = open(winsize(80, 24, 0, 0), &[]).unwrap();
        let mut termios = tcgetattr(&pty.slave).unwrap();
        // ECHO off, VINTR = ^X, then a speed (ignored), then the end marker and junk.
        let modes = [53, 0, 0, 0, 0, 1, 0, 0, 0, 0x18, 128, 0, 0, 0x96, 0, 0, 42];
        apply_modes(&mut termios, &modes);
        assert!(!termios.local_flags.contains(LocalFlags::ECHO));
        assert_eq!(termios.control_chars[libc::VINTR], 0x18);
        // A truncated list stops without panicking.
        apply_modes(&mut termios, &[53, 0, 1]);
    }
}
