use super::*;

fn pm(patterns: &[&str]) -> PatternMatcher {
    let owned: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
    PatternMatcher::new(&owned).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

/// Runs `matches` and the incremental walker form (fed its parents top-down, and with no
/// parent information) and checks that all agree with `want`.
fn check(patterns: &[&str], path: &str, want: bool) {
    let m = pm(patterns);
    assert_eq!(m.matches(path), want, "matches {patterns:?} {path:?}");
    let clean = clean_path(path);
    let mut info = MatchInfo::default();
    for parent in parent_prefixes(clean.trim_start_matches('/')) {
        info = m.matches_with_parent(parent, &info).1;
    }
    assert_eq!(
        m.matches_with_parent(path, &info).0,
        want,
        "walk {patterns:?} {path:?}"
    );
    assert_eq!(
        m.matches_with_parent(path, &MatchInfo::default()).0,
        want,
        "no-context {patterns:?} {path:?}"
    );
}

#[test]
fn single_patterns() {
    let cases: &[(&str, &str, bool)] = &[
        ("*", "fileutils.go", true),
        ("*.go", "fileutils.go", true),
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**/**", "dir/file", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/dir2/file", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("a\\*b", "a*b", true),
        ("a\\*b", "ab", false),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        // filepath.Match-derived cases.
        ("abc", "abc", true),
        ("*c", "abc", true),
        ("a*", "a", true),
        ("a*", "ab/c", true),
        ("a*/b", "abc/b", true),
        ("a*/b", "a/c/b", false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true),
        ("a*b?c*x", "abxbbxdbxebxczzy", false),
        ("ab[c]", "abc", true),
        ("ab[e-g]", "abc", false),
        ("ab[^c]", "abc", false),
        ("ab[^e-g]", "abc", true),
        ("a?b", "a☺b", true),
        ("a[^a]b", "a☺b", true),
        ("a???b", "a☺b", false),
        ("[a-ζ]*", "α", true),
        ("*[a-ζ]", "A", false),
        ("a?b", "a/b", false),
        ("a*b", "a/b", false),
        ("[\\]a]", "]", true),
        ("[\\-]", "-", true),
        ("[x\\-]", "x", true),
        ("[x\\-]", "-", true),
        ("[x\\-]", "z", false),
        ("[\\-x]", "a", false),
        ("*x", "xxx", true),
        // Not gitignore: a bare name is anchored at the root.
        ("foo", "foo", true),
        ("foo", "a/foo", false),
        ("foo", "foo/bar/baz", true),
        ("*.md", "a/README.md", false),
        ("a/b", "a/b/c/d", true),
        ("a/b", "a", false),
        ("a.b", "axb", false),
        ("a+b", "a+b", true),
        ("a{1}", "a{1}", true),
    ];
    for (pattern, path, want) in cases {
        check(&[pattern], path, *want);
    }
}

#[test]
fn multiple_patterns_last_match_wins() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/other.md", true),
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3-py3-none-any.whl",
            false,
        ),
        (&["**", "!dist/*.whl"], "dist/other.txt", true),
        (&["*", "!keep", "keep/drop"], "keep/drop/x", true),
        (&["*", "!keep", "keep/drop"], "keep/x", false),
        (&[], "any/path/there", false),
    ];
    for (patterns, path, want) in cases {
        check(patterns, path, *want);
    }
}

#[test]
fn root_is_never_excluded() {
    let m = pm(&["*", "**"]);
    assert!(!m.matches("."));
    assert!(!m.matches(""));
    assert!(!m.matches("/"));
    assert!(m.matches("/a"));
    assert!(m.matches("./a/../b"));
}

#[test]
fn construction_errors_and_flags() {
    assert!(PatternMatcher::new(&["!".into()]).is_err());
    assert!(PatternMatcher::new(&["[".into()]).is_err());
    let e = PatternMatcher::new(&["ok".into(), "!a[".into()]).unwrap_err();
    assert_eq!(e.pattern, "!a[");
    assert!(e.to_string().contains("invalid .dockerignore pattern"));
    assert!(!pm(&["docs", "config", ""]).has_exclusions());
    assert!(pm(&["docs", "  !docs/README.md"]).has_exclusions());
    assert!(pm(&["docs", "!docs/README.md  "]).has_exclusions());
    assert_eq!(
        pm(&["docs", "config", " "]).patterns(),
        vec!["docs", "config"]
    );
    // Like patternmatcher, `new` cleans before looking at `!` (`parse` strips it first).
    assert_eq!(pm(&["./a//b/", "!c/../d"]).patterns(), vec!["a/b", "d"]);
    assert_eq!(pm(&["!./c/d/"]).patterns(), vec!["!./c/d"]);
}

#[test]
fn parse_reads_like_ignorefile() {
    let text = "\u{feff}# comment\n\n  # not a comment\r\n/abs/path\n!  /neg/./x/\n\
                foo/../bar\n\t spaced \t\n!\n/\n./\n*.log # trailing\n";
    assert_eq!(
        parse(text),
        vec![
            "# not a comment",
            "abs/path",
            "!neg/x",
            "bar",
            "spaced",
            "!",
            "/",
            ".",
            "*.log # trailing",
        ]
    );
    assert!(parse("").is_empty());
    assert_eq!(parse("a\nb"), vec!["a", "b"]);
    // `!` alone is kept by the reader and rejected by the matcher, as in Docker.
    assert!(PatternMatcher::from_dockerignore("!\n").is_err());
}

#[test]
fn clean_path_like_go() {
    let cases = [
        ("", "."),
        (".", "."),
        ("a/b/", "a/b"),
        ("a//b", "a/b"),
        ("./a", "a"),
        ("a/./b/..", "a"),
        ("../a", "../a"),
        ("a/../..", ".."),
        ("/..", "/"),
        ("/../a", "/a"),
        ("/", "/"),
        ("//a/", "/a"),
        ("!./x", "!./x"),
    ];
    for (input, want) in cases {
        assert_eq!(clean_path(input), want, "{input:?}");
    }
}

/// The .dockerignore of conformance case 14 and what BuildKit sent for it.
#[test]
fn conformance_case_14() {
    let file = "# comments and blank lines are ignored\n\n**/*.log\n!keep/**/*.log\ntmp\n\
                *.md\n!README.md\nnode_modules/\nbuild/*\n!build/keep.me\n/secret.env\n";
    let m = PatternMatcher::from_dockerignore(file).unwrap();
    assert!(m.has_exclusions());
    let included = [
        ".dockerignore",
        "README.md",
        "build",
        "build/keep.me",
        "keep",
        "keep/deep",
        "keep/deep/k.log",
        "keep/deep/k.txt",
        "logs",
        "root.txt",
        "src",
        "src/a",
        "src/a/b",
        "src/a/b/one.go",
        "src/a/two.go",
        "src/c",
        "src/c/notes.md",
        "src/c/three.go",
    ];
    let excluded = [
        "logs/x.log",
        "root.log",
        "node_modules",
        "node_modules/pkg",
        "node_modules/pkg/index.js",
        "build/out.bin",
        "secret.env",
        "tmp",
        "tmp/t.txt",
    ];
    for p in included {
        assert!(!m.matches(p), "{p} should be included");
    }
    for p in excluded {
        assert!(m.matches(p), "{p} should be excluded");
    }
    // `keep/**/*.log` has wildcards, so excluded dirs must still be walked.
    assert!(!m.can_skip_excluded_dir("node_modules"));
}

#[test]
fn skipping_excluded_dirs() {
    assert!(pm(&["a"]).can_skip_excluded_dir("a"));
    let m = pm(&["a", "b", "!a/keep", "!c/**"]);
    assert!(!m.can_skip_excluded_dir("a"));
    assert!(m.can_skip_excluded_dir("b"));
    assert!(!m.can_skip_excluded_dir("c"));
    assert!(m.can_skip_excluded_dir("a/other"));
    assert!(!m.can_skip_excluded_dir("a/keep"));
    assert!(!pm(&["a", "!a/*.txt"]).can_skip_excluded_dir("b"));
}

#[test]
fn walker_form_inherits_parent_results() {
    // A later pattern that matched the parent keeps applying to its children.
    let m = pm(&["**/*.log", "!keep/**/*.log"]);
    let keep = m.matches_with_parent("keep", &MatchInfo::default()).1;
    let deep = m.matches_with_parent("keep/deep", &keep).1;
    assert!(!m.matches_with_parent("keep/deep/k.log", &deep).0);
    assert!(
        m.matches_with_parent("other/k.log", &MatchInfo::default())
            .0
    );
    let tmp = pm(&["tmp"]);
    let (ex, info) = tmp.matches_with_parent("tmp", &MatchInfo::default());
    assert!(ex);
    assert!(tmp.matches_with_parent("tmp/t.txt", &info).0);
}

/// Where patternmatcher's two forms disagree, the walker form gives what BuildKit's
/// context walk does: an exception skipped while the parent was not excluded is not
/// re-checked against that parent later.
#[test]
fn walker_form_differs_from_matches_like_buildkit() {
    let m = pm(&["a/b", "!a"]);
    assert!(!m.matches("a/b"));
    let a = m.matches_with_parent("a", &MatchInfo::default()).1;
    assert!(m.matches_with_parent("a/b", &a).0);
}
