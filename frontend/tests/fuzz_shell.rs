//! Fuzzing the shell-word expander: any word (variables with every modifier, quotes, both
//! escape characters, unbalanced braces) must expand or fail cleanly, never panic; a word
//! with nothing special in it expands to itself. `KILN_FUZZ_CASES=200000 cargo test -p
//! kiln-frontend --test fuzz_shell` runs it longer.

mod common;

use kiln_frontend::shell::{LexOptions, Lexer};
use proptest::prelude::*;

fn env(name: &str) -> Option<String> {
    match name {
        "A" => Some("a.b/c d".into()),
        "EMPTY" => Some(String::new()),
        "Q" => Some("'\"$A\\".into()),
        _ => None,
    }
}

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_ ]{1,5}",
        prop::sample::select(vec![
            "$",
            "$A",
            "$EMPTY",
            "$Q",
            "$UNSET",
            "$1",
            "$@",
            "${",
            "}",
            "${A",
            "${A}",
            "${A:",
            ":-",
            "-",
            ":+",
            "+",
            ":?",
            "?",
            "#",
            "##",
            "%",
            "%%",
            "/",
            "//",
            "*",
            "[",
            "]",
            "'",
            "\"",
            "\\",
            "`",
            "\n",
            "\t",
            "é",
            "${A:-${Q}}",
            "${UNSET:?gone}",
            "${A/*/x}",
            "${A//./-}",
            "${A##*/}",
            "${A%\\}}",
        ])
        .prop_map(str::to_string),
    ]
}

fn word() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..10).prop_map(|p| p.concat())
}

fn options() -> impl Strategy<Value = LexOptions> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c, d)| {
        LexOptions {
            raw_quotes: a,
            raw_escapes: b,
            skip_process_quotes: c,
            skip_unset_env: d,
        }
    })
}

fn escape() -> impl Strategy<Value = char> {
    prop::sample::select(vec!['\\', '`'])
}

proptest! {
    #![proptest_config(common::config(8000))]

    #[test]
    fn fuzz_shell_generated_words(w in word(), esc in escape(), opts in options()) {
        let lexer = Lexer::new(esc);
        let _ = lexer.process_word(&w, &env);
        let _ = lexer.process_words(&w, &env);
        let _ = lexer.process_word_with(&w, &env, opts);
        let _ = lexer.process_words_with(&w, &env, opts);
    }

    #[test]
    fn fuzz_shell_arbitrary_text(w in any::<String>(), esc in escape(), opts in options()) {
        let lexer = Lexer::new(esc);
        let _ = lexer.process_word_with(&w, &env, opts);
        let _ = lexer.process_words_with(&w, &env, opts);
    }

    #[test]
    fn fuzz_shell_plain_words_are_themselves(w in "[^$'\"\\\\`]{0,40}", esc in escape()) {
        let lexer = Lexer::new(esc);
        let e = lexer.process_word(&w, &env).expect("a plain word expands");
        prop_assert_eq!(&e.result, &w);
        prop_assert!(e.used.is_empty());
        // `<<` keeps the blanks after it (a heredoc marker), so it is left out here.
        if !w.contains('<') {
            let words = lexer.process_words(&w, &env).expect("plain words split");
            let want: Vec<&str> = w.split_whitespace().collect();
            prop_assert_eq!(words, want);
        }
    }
}
