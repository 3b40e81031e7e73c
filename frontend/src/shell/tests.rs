//! Behaviour tests for the lexer, covering what BuildKit's envVarTest/wordsTest exercise.

use std::collections::{BTreeSet, HashMap};

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn word(input: &str, pairs: &[(&str, &str)]) -> Result<Expanded, ShellError> {
    let env = env_of(pairs);
    let look = |k: &str| env.get(k).cloned();
    Lexer::new('\\').process_word(input, &look)
}

fn std_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
}

/// `None` = must fail.
fn check_words_table(cases: &[(&str, Option<&str>)]) {
    let env = std_env();
    for (input, expected) in cases {
        let got = word(input, &env);
        match expected {
            None => assert!(got.is_err(), "{input:?} should fail, got {got:?}"),
            Some(want) => match got {
                Ok(e) => assert_eq!(&e.result, want, "input {input:?}"),
                Err(e) => panic!("{input:?} failed: {e}"),
            },
        }
    }
}

#[test]
fn quotes_and_escapes() {
    check_words_table(&[
        ("hello", Some("hello")),
        ("he'll'o", Some("hello")),
        ("he'llo", None),
        ("he\\'llo", Some("he'llo")),
        ("he\\\\'llo", None),
        ("abc\\tdef", Some("abctdef")),
        ("\"abc\\tdef\"", Some("abc\\tdef")),
        ("\"abc\\\\tdef\"", Some("abc\\tdef")),
        ("'abc\\tdef'", Some("abc\\tdef")),
        ("hello\\", Some("hello")),
        ("hello\\\\", Some("hello\\")),
        ("\"hello", None),
        ("\"hello\\\"", None),
        ("\"hel'lo\"", Some("hel'lo")),
        ("'hello", None),
        ("'hello\\'", Some("hello\\")),
        ("'hello\\there'", Some("hello\\there")),
        ("'hello\\\\there'", Some("hello\\\\there")),
        ("\"''\"", Some("''")),
        ("'\"hello\"'", Some("\"hello\"")),
        ("\"a\\\"b\"", Some("a\"b")),
        ("\"\"", Some("")),
        ("''", Some("")),
        ("a\" b \"c", Some("a b c")),
        ("안'녕'하세요", Some("안녕하세요")),
        ("안'녕하세요", None),
        ("안녕\\'하세요", Some("안녕'하세요")),
        ("\"안녕\\t하세요\"", Some("안녕\\t하세요")),
    ]);
}

#[test]
fn simple_variables() {
    check_words_table(&[
        ("$.", Some("$.")),
        ("$", Some("$")),
        ("a$ b", Some("a$ b")),
        ("he$1x", Some("hex")),
        ("he$.x", Some("he$.x")),
        ("he$pwd.", Some("he.")),
        ("he$PWD", Some("he/home")),
        ("he\\$PWD", Some("he$PWD")),
        ("he\\\\$PWD", Some("he\\/home")),
        ("\"he\\$PWD\"", Some("he$PWD")),
        ("\"he\\\\$PWD\"", Some("he\\/home")),
        ("'he\\$PWD'", Some("he\\$PWD")),
        ("\\${}", Some("${}")),
        ("\\${}aaa", Some("${}aaa")),
        ("he\\${}xx", Some("he${}xx")),
        ("he${hi}xx", Some("hexx")),
        ("he${PWD}", Some("he/home")),
        ("'he${XX}'", Some("he${XX}")),
        ("\"he${PWD}\"", Some("he/home")),
        ("\"he'$PWD'\"", Some("he'/home'")),
        ("\"$PWD\"", Some("/home")),
        ("'$PWD'", Some("$PWD")),
        ("'\\$PWD'", Some("\\$PWD")),
        ("$KOREAN", Some("한국어")),
        ("안녕$KOREAN", Some("안녕한국어")),
        ("$PWD_x", Some("")),
        ("${PWD}_x", Some("/home_x")),
        ("$PWD-x", Some("/home-x")),
    ]);
}

#[test]
fn brace_syntax_errors() {
    check_words_table(&[
        ("${}", None),
        ("${}aaa", None),
        ("he${}", None),
        ("he${.}", None),
        ("he${PWD", None),
        ("${", None),
        ("he${PWD:=000}xx", None),
        ("he${XXX:YYY}", None),
        ("${{aaa}", None),
        ("${aaa", None),
        ("${{aaa:-bbb}", None),
        ("${aaa:-bbb", None),
        ("${aaa:-bbb ${foo}", None),
        ("${:}", None),
        ("${:-bbb}", None),
        ("${:+bbb}", None),
        ("${PWD:", None),
        ("${PWD!}", None),
        ("${aaa}}", Some("}")),
        ("${aaa:-bbb}}", Some("bbb}")),
        ("${aaa:-bbb {foo}", Some("bbb {foo")),
    ]);
}

#[test]
fn error_messages() {
    let msg = |input: &str| word(input, &[]).unwrap_err().0;
    assert_eq!(
        msg("${aaa"),
        "failed to process \"${aaa\": syntax error: missing '}'"
    );
    assert!(msg("${aaa:-x").ends_with("syntax error: missing '}'"));
    assert!(msg("${}").ends_with("syntax error: bad substitution"));
    assert!(msg("${a/x").ends_with("syntax error: missing '/' in ${}"));
    assert!(msg("${a:=x}").ends_with("unsupported modifier (:=) in substitution"));
    assert!(msg("${a:#x}").ends_with("unsupported modifier (:#) in substitution"));
    assert!(msg("'abc").ends_with("looking for matching single-quote"));
    assert!(msg("\"abc").ends_with("looking for matching double-quote"));
    assert!(msg("${a#\\x}").contains("invalid pattern (\\x) in substitution"));
    assert!(msg("${a?}").ends_with("a: is not allowed to be unset"));
    assert!(word("${a:?}", &[("a", "")])
        .unwrap_err()
        .0
        .ends_with("a: is not allowed to be empty"));
}

#[test]
fn default_alternate_and_required() {
    check_words_table(&[
        ("he${XXX:-000}xx", Some("he000xx")),
        ("he${PWD:-000}xx", Some("he/homexx")),
        ("he${XXX:-$PWD}xx", Some("he/homexx")),
        ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
        ("he${XXX:-${YYY:-yyy}}xx", Some("heyyyxx")),
        ("he${XXX?}", None),
        ("he${XXX:?}", None),
        ("he${PWD?}", Some("he/home")),
        ("he${PWD:?}", Some("he/home")),
        ("he${NULL?}", Some("he")),
        ("he${NULL:?}", None),
        ("he${NULL-x}", Some("he")),
        ("he${NULL:-x}", Some("hex")),
        ("he${NULL+x}", Some("hex")),
        ("he${NULL:+x}", Some("he")),
        ("he${XXX:+${PWD}}xx", Some("hexx")),
        ("he${PWD:+${XXX}}xx", Some("hexx")),
        ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
        ("he${XXX:+000}xx", Some("hexx")),
        ("he${PWD:+000}xx", Some("he000xx")),
        ("he${PWD:+${PWD}:}xx", Some("he/home:xx")),
        ("he${XXX:-\\$PWD:}xx", Some("he$PWD:xx")),
        ("he${XXX:-\\${PWD}z}xx", Some("he${PWDz}xx")),
        ("${aaa:-bbb}", Some("bbb")),
        ("${aaa:-${bbb:-ccc}}", Some("ccc")),
        ("${aaa:-\"a b\"}", Some("a b")),
        ("${aaa:-'x}'}", Some("x}")),
        ("${aaa:-\\}}", Some("}")),
    ]);
}

#[test]
fn positional_and_special_parameters_are_unset() {
    let mut cases: Vec<(String, Option<String>)> = Vec::new();
    for p in [
        "1", "2", "9", "999", "001", "@", "*", "#", "?", "-", "$", "!", "0",
    ] {
        cases.push((format!("${p}"), Some(String::new())));
        cases.push((format!("${{{p}}}"), Some(String::new())));
        cases.push((format!("${{{p}:+bbb}}"), Some(String::new())));
        cases.push((format!("${{{p}:-bbb}}"), Some("bbb".into())));
        cases.push((format!("${{{p}:-bbb}}aaa"), Some("bbbaaa".into())));
        cases.push((format!("${{{p}}}aaa"), Some("aaa".into())));
    }
    cases.push(("$999aaa".into(), Some("aaa".into())));
    cases.push(("$001aaa".into(), Some("aaa".into())));
    cases.push(("$@@@".into(), Some("@@".into())));
    cases.push(("$@aaa".into(), Some("aaa".into())));
    let table: Vec<(&str, Option<&str>)> = cases
        .iter()
        .map(|(i, e)| (i.as_str(), e.as_deref()))
        .collect();
    check_words_table(&table);
}

#[test]
fn required_messages_expand() {
    let no_empty = "${VAR:?message here$ARG}";
    let no_unset = "${VAR?message here$ARG}";
    let set = [("VAR", "plain"), ("ARG", "x")];
    let empty = [("VAR", ""), ("ARG", "x")];
    let unset = [("ARG", "x")];
    assert_eq!(word(no_empty, &set).unwrap().result, "plain");
    assert!(word(no_empty, &empty)
        .unwrap_err()
        .0
        .contains("VAR: message herex"));
    assert!(word(no_empty, &unset)
        .unwrap_err()
        .0
        .contains("message herex"));
    assert_eq!(word(no_unset, &set).unwrap().result, "plain");
    assert_eq!(word(no_unset, &empty).unwrap().result, "");
    assert!(word(no_unset, &unset)
        .unwrap_err()
        .0
        .contains("message herex"));
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// (input, env, expected result or None for error, referenced names)
type MatchCase<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
    &'a [&'a str],
);

#[test]
fn modifiers_and_used_names() {
    let fb: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
    let cases: &[MatchCase] = &[
        ("x", &[("DUMMY", "d")], Some("x"), &[]),
        ("x ${UNUSED}", &[], Some("x "), &["UNUSED"]),
        ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"]),
        (
            "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
            fb,
            Some("xxx  ccc"),
            &["BAR", "BAZ", "FOO"],
        ),
        (
            "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
            fb,
            Some("xxx bbb ccc"),
            &["BAR", "BAZ", "FOO"],
        ),
        ("${FOO:-}", fb, Some("xxx"), &["FOO"]),
        ("${FOO:-}", &[], Some(""), &["FOO"]),
        (
            "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
            fb,
            Some("aaa bbb "),
            &["BAR", "BAZ", "FOO"],
        ),
        (
            "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
            fb,
            Some("aaa  "),
            &["BAR", "BAZ", "FOO"],
        ),
        ("${FOO?aaa}", fb, Some("xxx"), &["FOO"]),
        ("${BAR?bbb}", fb, Some(""), &["BAR"]),
        ("${BAZ?ccc}", fb, None, &[]),
        ("${FOO:?aaa}", fb, Some("xxx"), &["FOO"]),
        ("${BAR:?bbb}", fb, None, &[]),
        ("${BAZ:?}", fb, None, &[]),
        ("${FOO=aaa}", fb, None, &[]),
        ("${FOO=:aaa}", fb, None, &[]),
        ("${FOO=}", &[], None, &[]),
        (
            "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
            &[("FOO", "()[]{}^$.*?|\\x")],
            Some("x"),
            &["FOO"],
        ),
        ("${FOO%%\\**}", &[("FOO", "xx**")], Some("xx"), &["FOO"]),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"]),
        ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"]),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "x")],
            Some("xyy"),
            &["BAR", "FOO"],
        ),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["BAR", "FOO"],
        ),
        ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"]),
        ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"]),
        ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"]),
        ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"]),
        (
            "${ABC:-.}${FOO%x}${ABC:-.}",
            &[("FOO", "xxyy")],
            Some(".xxyy."),
            &["ABC", "FOO"],
        ),
        ("${FOO%y}", &[("FOO", "xxyy")], Some("xxy"), &["FOO"]),
        ("${FOO%%y*}", &[("FOO", "xyxyy")], Some("x"), &["FOO"]),
        ("${FOO%y*}", &[("FOO", "xyxyy")], Some("xyxy"), &["FOO"]),
        (
            "${FOO%%\\**\\*}",
            &[("FOO", "a***yy*")],
            Some("a"),
            &["FOO"],
        ),
        ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"]),
        (
            "${FOO%%$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["BAR", "FOO"],
        ),
        ("${FOO#x}", &[], Some(""), &["FOO"]),
        ("${FOO:#}", &[], None, &[]),
        ("${FOO:##}", &[], None, &[]),
        ("${FOO:%}", &[], None, &[]),
        ("${FOO:%%}", &[], None, &[]),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
            &["FOO", "NEEDLE"],
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
            &["FOO", "NEEDLE"],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "/a/foo/b/c.txt"),
                ("NEEDLE", "/?/"),
                ("REPLACEMENT", "/"),
            ],
            Some("/foo/b/c.txt - /foo/c.txt"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "http://google.de"),
                ("NEEDLE", "http://"),
                ("REPLACEMENT", "https://"),
            ],
            Some("https://google.de"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
        ),
        (
            "${FOO//\\//\\/}",
            &[("FOO", "/tmp/foo.txt")],
            Some("\\/tmp\\/foo.txt"),
            &["FOO"],
        ),
        (
            "${FOO/$BAR/ww}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("wwxxyy"),
            &["BAR", "FOO"],
        ),
        ("${FOO//ww}", &[("FOO", "xxyy")], None, &[]),
        ("${FOO//}", &[("FOO", "xxyy")], None, &[]),
        ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"]),
        ("${FOO///}", &[], Some(""), &["FOO"]),
        ("${FOO/x*/z}", &[("FOO", "axxb")], Some("az"), &["FOO"]),
    ];
    for (input, env, expected, used) in cases {
        let got = word(input, env);
        match expected {
            None => assert!(got.is_err(), "{input:?} should fail, got {got:?}"),
            Some(want) => {
                let got = got.unwrap_or_else(|e| panic!("{input:?} failed: {e}"));
                assert_eq!(&got.result, want, "input {input:?}");
                assert_eq!(got.used, names(used), "used of {input:?}");
            }
        }
    }
}

#[test]
fn unset_helper_reports_unmatched() {
    let env = env_of(&[("A", "1")]);
    let look = |k: &str| env.get(k).cloned();
    let e = Lexer::new('\\').process_word("$A ${B:-$C}", &look).unwrap();
    assert_eq!(e.result, "1 ");
    assert_eq!(e.used, names(&["A", "B", "C"]));
    assert_eq!(e.unset(&look), names(&["B", "C"]));
}

#[test]
fn platform_style_names() {
    let w =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
    let mut env = base.to_vec();
    env.extend([("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]);
    assert_eq!(
        word(w, &env).unwrap().result,
        "something-v1.2.3.linux-arm-v7.tar.gz"
    );
    let mut env = base.to_vec();
    env.extend([("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]);
    assert_eq!(
        word(w, &env).unwrap().result,
        "something-v1.2.3.linux-arm64.tar.gz"
    );
    let mut env = base.to_vec();
    env.push(("TARGETARCH", "arm64"));
    assert_eq!(
        word(w, &env).unwrap().result,
        "something-v1.2.3.linux-arm64.tar.gz"
    );
}

#[test]
fn backtick_escape() {
    let env = env_of(&[("X", "1")]);
    let look = |k: &str| env.get(k).cloned();
    let lx = Lexer::new('`');
    let w = |s: &str| lx.process_word(s, &look).map(|e| e.result);
    assert_eq!(w("C:\\dir\\$X").unwrap(), "C:\\dir\\1");
    assert_eq!(w("a`$X").unwrap(), "a$X");
    assert_eq!(w("a``b").unwrap(), "a`b");
    assert_eq!(w("\"a`\"b\"").unwrap(), "a\"b");
    assert_eq!(w("\"a\\\"").unwrap(), "a\\");
    assert_eq!(w("a` b").unwrap(), "a b");
}

fn split(input: &str, pairs: &[(&str, &str)]) -> Result<Vec<String>, ShellError> {
    let env = env_of(pairs);
    let look = |k: &str| env.get(k).cloned();
    Lexer::new('\\').process_words(input, &look)
}

#[test]
fn word_splitting() {
    let env: &[(&str, &str)] = &[
        ("hi", "hi"),
        ("space", "abc  def"),
        ("leading", "  ab c"),
        ("trailing", "ab c   "),
    ];
    let cases: &[(&str, &[&str])] = &[
        ("hello", &["hello"]),
        ("hello${nope}bye", &["hellobye"]),
        ("hello${hi}bye", &["hellohibye"]),
        ("hello${space}bye", &["helloabc", "defbye"]),
        ("hello\"${space}\"bye", &["helloabc  defbye"]),
        ("hello \"${space}\"bye", &["hello", "abc  defbye"]),
        ("hello${leading}def", &["hello", "ab", "cdef"]),
        ("hello\"${leading}\" def", &["hello  ab c", "def"]),
        ("hello\"${leading}\"", &["hello  ab c"]),
        ("hello${leading}", &["hello", "ab", "c"]),
        ("hello${trailing}", &["helloab", "c"]),
        ("hello${trailing}d", &["helloab", "c", "d"]),
        ("hello\"${trailing}\"d", &["helloab c   d"]),
        ("hel\"lo${trailing}\"", &["helloab c   "]),
        ("hello\" there  \"", &["hello there  "]),
        ("hello there     ", &["hello", "there"]),
        ("   hello   there", &["hello", "there"]),
        ("hello\\ there", &["hello there"]),
        ("hello\\\" there", &["hello\"", "there"]),
        ("hello\"\\\\there\"", &["hello\\there"]),
        ("hello\"\\there\"", &["hello\\there"]),
        ("hello'\\\\there'", &["hello\\\\there"]),
        ("hello'\\there'", &["hello\\there"]),
        ("hello'$there'", &["hello$there"]),
        ("80/tcp\t443/udp\n8080", &["80/tcp", "443/udp", "8080"]),
        ("\"\" a", &["a"]),
        ("", &[]),
        ("cat <<EOF", &["cat", "<<EOF"]),
        ("cat << EOF", &["cat", "<< EOF"]),
        ("a<b", &["a<b"]),
    ];
    for (input, want) in cases {
        let got = split(input, env).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(&got, want, "input {input:?}");
    }
    assert!(split("hello\" there", env).is_err());
}

#[test]
fn options_raw_quotes_and_skip_unset() {
    let env = env_of(&[("A", "1")]);
    let look = |k: &str| env.get(k).cloned();
    let lx = Lexer::new('\\');
    let opts = LexOptions {
        raw_quotes: true,
        skip_unset_env: true,
        ..Default::default()
    };
    let w = |s: &str| lx.process_word_with(s, &look, opts).unwrap().result;
    assert_eq!(w("echo \"$A\" '$B' $B ${B}"), "echo \"1\" '$B' $B ${B}");
    assert_eq!(w("${B:-x} ${B/a/b} ${A:-x}"), "${B:-x} ${B/a/b} 1");
    let words = lx
        .process_words_with("a 'b c' \"$B d\"", &look, opts)
        .unwrap();
    assert_eq!(words, vec!["a", "'b c'", "\"$B d\""]);
}

#[test]
fn options_raw_escapes_and_skip_quotes() {
    let env = env_of(&[("A", "1")]);
    let look = |k: &str| env.get(k).cloned();
    let lx = Lexer::new('\\');
    let raw = LexOptions {
        raw_escapes: true,
        raw_quotes: true,
        skip_unset_env: true,
        ..Default::default()
    };
    let words = lx
        .process_words_with("cat <<\"EOF\" a\\ b \\$A", &look, raw)
        .unwrap();
    assert_eq!(words, vec!["cat", "<<\"EOF\"", "a\\ b", "\\$A"]);
    let skip = LexOptions {
        skip_process_quotes: true,
        ..Default::default()
    };
    let e = lx
        .process_word_with("echo \"$A\" 'it''s' \\$A", &look, skip)
        .unwrap();
    assert_eq!(e.result, "echo \"1\" 'it''s' $A");
}

#[test]
fn splitting_of_modifier_results() {
    let env: &[(&str, &str)] = &[("P", "80 443")];
    assert_eq!(split("${X:-\"80 443\"}", env).unwrap(), vec!["80", "443"]);
    assert_eq!(split("${P}/tcp", env).unwrap(), vec!["80", "443/tcp"]);
    // BuildKit loses "80" here (a shared buffer is reset by the nested word); kiln keeps it.
    assert_eq!(split("80${X:-}/tcp", env).unwrap(), vec!["80/tcp"]);
    assert_eq!(
        split("a ${X:-b c} d", env).unwrap(),
        vec!["a", "b", "c", "d"]
    );
    assert!(split("a ${X:-b", env).is_err());
}
