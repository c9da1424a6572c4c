//! Full classification of a statement string: tokenize, lexical checks, then sqlparser's AST.
//!
//! Runs only on a cache miss for statements whose first keyword could start a read or a
//! control statement; this is where the ~40 µs go.

use std::panic::{catch_unwind, AssertUnwindSafe};

use sqlparser::ast::{Query, SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::config::Functions;
use super::prescan::CONTROL_STARTS;
use super::{lexical, Access, Reason, Verdict};

/// Classifies `sql`, which starts at its first keyword (leading comments already skipped).
pub(super) fn analyze(sql: &str, functions: &Functions) -> Verdict {
    // A parser bug must cost a trip to the primary, not the session: any panic in the
    // tokenizer or parser becomes "unparsable".
    catch_unwind(AssertUnwindSafe(|| analyze_inner(sql, functions)))
        .unwrap_or(Verdict::write(Reason::Unparsable))
}

fn analyze_inner(sql: &str, functions: &Functions) -> Verdict {
    // `U&"d\0061ta"` spells an identifier with escapes that sqlparser keeps undecoded, which
    // would hide a function name from the lexical check. Rare enough to simply refuse.
    if contains_unicode_identifier(sql) {
        return Verdict::write(Reason::Unparsable);
    }
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return Verdict::write(Reason::Unparsable);
    };
    let significant: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .collect();
    let statements: Vec<&[&Token]> = significant
        .split(|t| matches!(t, Token::SemiColon))
        .filter(|s| !s.is_empty())
        .collect();
    let first_word = match significant.first() {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
        _ => String::new(),
    };
    if statements.is_empty() {
        return Verdict {
            access: Access::Read,
            reason: Reason::Empty,
            control: None,
        };
    }
    if CONTROL_STARTS.contains(&first_word.as_str()) {
        let control = match statements.as_slice() {
            [only] => lexical::control(only),
            _ => None,
        };
        return Verdict {
            access: Access::Write,
            reason: Reason::Control,
            control,
        };
    }
    if let Some(reason) = lexical::scan(&significant, functions, first_word == "with") {
        return Verdict::write(reason);
    }
    parse_and_check(tokens)
}

/// Second, independent opinion: every statement must parse, and be a read in the AST.
fn parse_and_check(tokens: Vec<TokenWithSpan>) -> Verdict {
    let dialect = PostgreSqlDialect {};
    let Ok(statements) = Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
    else {
        return Verdict::write(Reason::Unparsable);
    };
    for statement in &statements {
        if let Err(reason) = check_statement(statement) {
            return Verdict::write(reason);
        }
    }
    let reason = if statements.is_empty() {
        Reason::Empty
    } else {
        Reason::Read
    };
    Verdict {
        access: Access::Read,
        reason,
        control: None,
    }
}

/// Whitelist: a plain query, `SHOW name`, or `EXPLAIN` of a plain query. `EXPLAIN` without
/// `ANALYZE` of a write would be harmless on a standby, but it is rare and the primary is
/// always right, so the inner statement must be a read either way.
fn check_statement(statement: &Statement) -> Result<(), Reason> {
    match statement {
        Statement::Query(query) => check_query(query),
        Statement::ShowVariable { .. } => Ok(()),
        Statement::Explain { statement, .. } => match statement.as_ref() {
            Statement::Query(query) => check_query(query),
            _ => Err(Reason::Write),
        },
        _ => Err(Reason::Write),
    }
}

fn check_query(query: &Query) -> Result<(), Reason> {
    if !query.locks.is_empty() {
        return Err(Reason::LockingRead);
    }
    // Clauses of other dialects that sqlparser accepts anyway: not PostgreSQL, so not a read.
    if query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return Err(Reason::Unparsable);
    }
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            check_query(&cte.query).map_err(|reason| match reason {
                Reason::Write => Reason::WritableCte,
                other => other,
            })?;
        }
    }
    check_set_expr(&query.body)
}

fn check_set_expr(body: &SetExpr) -> Result<(), Reason> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => Err(Reason::SelectInto),
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => Ok(()),
        SetExpr::Query(query) => check_query(query),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            Err(Reason::Write)
        }
    }
}

/// True if `U&"` appears anywhere (case-insensitive), even inside a string: cheap and safe.
fn contains_unicode_identifier(sql: &str) -> bool {
    sql.as_bytes()
        .windows(3)
        .any(|w| (w[0] | 0x20) == b'u' && w[1] == b'&' && w[2] == b'"')
}
