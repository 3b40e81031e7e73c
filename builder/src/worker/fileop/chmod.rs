//! `--chmod` values: octal, or chmod(1)-style symbolic clauses applied to each entry's own
//! mode (umask 0, so a clause without `ugoa` means all).

use kiln_solver::llb::ChmodOpt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --chmod value {0:?}")]
pub struct BadMode(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeSpec {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    who: u32,
    ops: Vec<(char, Perm)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perm {
    /// `rwxXst` letters.
    Bits(String),
    /// `u`, `g` or `o`: copy that class's current bits.
    Copy(char),
}

const WHO_U: u32 = 0o4700;
const WHO_G: u32 = 0o2070;
const WHO_O: u32 = 0o1007;

impl ModeSpec {
    pub fn from_opt(opt: &ChmodOpt) -> Result<ModeSpec, BadMode> {
        match opt {
            ChmodOpt::Octal(m) => {
                if *m > 0o7777 {
                    return Err(BadMode(format!("{m:o}")));
                }
                Ok(ModeSpec::Octal(*m))
            }
            ChmodOpt::Symbolic(s) => parse_symbolic(s),
        }
    }

    pub fn octal(&self) -> Option<u32> {
        match self {
            ModeSpec::Octal(m) => Some(*m),
            ModeSpec::Symbolic(_) => None,
        }
    }

    /// The permission bits (`0o7777`) an entry with permission bits `mode` gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            ModeSpec::Octal(m) => *m,
            ModeSpec::Symbolic(clauses) => {
                let mut cur = mode & 0o7777;
                for c in clauses {
                    for (op, perm) in &c.ops {
                        let bits = perm_bits(perm, cur, is_dir) & c.who;
                        cur = match op {
                            '+' => cur | bits,
                            '-' => cur & !bits,
                            _ => (cur & !c.who) | bits,
                        };
                    }
                }
                cur
            }
        }
    }
}

fn perm_bits(p: &Perm, cur: u32, is_dir: bool) -> u32 {
    match p {
        Perm::Copy(class) => {
            let b = match class {
                'u' => (cur >> 6) & 7,
                'g' => (cur >> 3) & 7,
                _ => cur & 7,
            };
            b | (b << 3) | (b << 6)
        }
        Perm::Bits(letters) => letters.chars().fold(0, |acc, l| {
            acc | match l {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || cur & 0o111 != 0 => 0o111,
                's' => 0o6000,
                't' => 0o1000,
                _ => 0,
            }
        }),
    }
}

fn parse_symbolic(s: &str) -> Result<ModeSpec, BadMode> {
    let bad = || BadMode(s.to_string());
    let mut clauses = Vec::new();
    for part in s.split(',') {
        let mut chars = part.chars().peekable();
        let mut who = 0;
        while let Some(&c) = chars.peek() {
            who |= match c {
                'u' => WHO_U,
                'g' => WHO_G,
                'o' => WHO_O,
                'a' => WHO_U | WHO_G | WHO_O,
                _ => break,
            };
            chars.next();
        }
        if who == 0 {
            who = WHO_U | WHO_G | WHO_O;
        }
        let mut ops = Vec::new();
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return Err(bad());
            }
            let mut letters = String::new();
            let mut copy = None;
            while let Some(&c) = chars.peek() {
                match c {
                    'r' | 'w' | 'x' | 'X' | 's' | 't' if copy.is_none() => letters.push(c),
                    'u' | 'g' | 'o' if letters.is_empty() && copy.is_none() => copy = Some(c),
                    '+' | '-' | '=' => break,
                    _ => return Err(bad()),
                }
                chars.next();
            }
            ops.push((
                op,
                match copy {
                    Some(c) => Perm::Copy(c),
                    None => Perm::Bits(letters),
                },
            ));
        }
        if ops.is_empty() {
            return Err(bad());
        }
        clauses.push(Clause { who, ops });
    }
    Ok(ModeSpec::Symbolic(clauses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        ModeSpec::from_opt(&ChmodOpt::Symbolic(s.into()))
            .unwrap()
            .apply(mode, dir)
    }

    #[test]
    fn symbolic_like_buildkit() {
        // Values pinned by conformance case 08-copy-chmod.
        assert_eq!(sym("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(sym("u=rwX,go=rX", 0o755, false), 0o755);
        assert_eq!(sym("u=rwX,go=rX", 0o700, true), 0o755);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("go-r", 0o755, true), 0o711);
        assert_eq!(sym("go-r", 0o644, false), 0o600);
        assert_eq!(sym("a=r,u+w", 0o755, false), 0o644);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("g=u", 0o740, false), 0o770);
        assert_eq!(sym("o=", 0o777, false), 0o770);
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "u", "z+x", "u+q", "u+x,"] {
            assert!(
                ModeSpec::from_opt(&ChmodOpt::Symbolic(s.into())).is_err(),
                "{s}"
            );
        }
        assert!(ModeSpec::from_opt(&ChmodOpt::Octal(0o17777)).is_err());
        assert_eq!(
            ModeSpec::from_opt(&ChmodOpt::Octal(0o4755))
                .unwrap()
                .apply(0o644, false),
            0o4755
        );
    }
}
