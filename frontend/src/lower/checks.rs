//! Build checks as part of a build: the check configuration of this request (directive or
//! `BUILDKIT_DOCKERFILE_CHECK`), the findings tied to the Dockerfile, and `check` for
//! `kiln build --check`.

use super::{parse_request, predefined_args, BuildRequest, FrontendError, SourceLocation};
use crate::lint::{self, CheckConfig, CheckContext, CheckWarning};
use crate::parser::Dockerfile;

/// Runs the checks `req` asks for over `df`; returns the findings and the configuration
/// (whose `error` decides whether they fail the build).
pub(super) fn run_checks(
    req: &BuildRequest,
    df: &Dockerfile,
) -> Result<(Vec<CheckWarning>, CheckConfig), FrontendError> {
    let config = CheckConfig::for_build(df.directive("check"), &req.build_args).map_err(|e| {
        let line = df
            .directives
            .iter()
            .find(|d| d.name == "check")
            .map_or(1, |d| d.line);
        FrontendError::Syntax {
            location: SourceLocation::new(&req.filename, &req.dockerfile, line, line),
            message: e.to_string(),
        }
    })?;
    let ctx = CheckContext {
        predefined_args: predefined_args(req),
    };
    let warnings = lint::run(df, &ctx, &config)
        .into_iter()
        .map(|f| CheckWarning::new(f, &req.filename, &req.dockerfile))
        .collect();
    Ok((warnings, config))
}

/// `kiln build --check`: parses the Dockerfile, validates its instructions and runs the
/// checks, without resolving images or building. The configuration's `error` is not
/// applied: reporting the findings is the whole point.
pub fn check(req: &BuildRequest) -> Result<Vec<CheckWarning>, FrontendError> {
    let (df, _) = parse_request(req)?;
    Ok(run_checks(req, &df)?.0)
}
