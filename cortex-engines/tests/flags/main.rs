//! The checked-in flag tables are what the pinned engines' own help generates.
//! To regenerate after a version change: `CORTEX_WRITE_FLAGS=1 cargo test -p cortex-engines --test flags`.

use std::path::Path;

use cortex_engines::flags::FlagTable;

fn facts() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    assert!(
        p.exists(),
        "{} is missing (testdata/ is part of the repository)",
        p.display()
    );
    p
}

fn check(generated: &FlagTable, checked_in: &Path) {
    let tsv = generated.to_tsv();
    if std::env::var_os("CORTEX_WRITE_FLAGS").is_some() {
        std::fs::write(checked_in, &tsv).unwrap();
    }
    let committed = std::fs::read_to_string(checked_in).unwrap();
    assert!(
        committed == tsv,
        "{} differs from the table generated from the facts; regenerate with CORTEX_WRITE_FLAGS=1",
        checked_in.display()
    );
    assert_eq!(
        &FlagTable::from_tsv(&committed),
        generated,
        "the TSV reads back the same table"
    );
}

#[test]
fn llama_server_table_is_generated_from_its_help() {
    let help = std::fs::read_to_string(facts().join("llama-server-b11434-help.txt")).unwrap();
    let table = FlagTable::from_llama_help("b11434", &help);
    check(
        &table,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/llamacpp/flags-b11434.tsv"),
    );
    assert!(table.flags().len() > 200, "{}", table.flags().len());
}

#[test]
fn vllm_table_is_generated_from_its_argparse_options() {
    let json = std::fs::read_to_string(facts().join("vllm-0.32.0/vllm-serve-args.json")).unwrap();
    let constraints =
        std::fs::read_to_string(facts().join("vllm-0.32.0/vllm-field-constraints.json")).unwrap();
    let table = FlagTable::from_vllm_args("0.32.0", &json, &constraints).unwrap();
    check(
        &table,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/vllm/flags-0.32.0.tsv"),
    );
    assert!(table.flags().len() > 300, "{}", table.flags().len());
}

#[test]
fn vllm_parser_facts_are_generated_from_the_real_parser() {
    use cortex_engines::vllm::args::ParserFacts;
    let json = std::fs::read_to_string(facts().join("vllm-0.32.0/vllm-parser-facts.json")).unwrap();
    let facts = ParserFacts::from_facts_json(&json).unwrap();
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/vllm/parser-0.32.0.tsv");
    let tsv = facts.to_tsv();
    if std::env::var_os("CORTEX_WRITE_FLAGS").is_some() {
        std::fs::write(&checked_in, &tsv).unwrap();
    }
    let committed = std::fs::read_to_string(&checked_in).unwrap();
    assert!(
        committed == tsv,
        "{} differs from the facts; regenerate with CORTEX_WRITE_FLAGS=1",
        checked_in.display()
    );
    assert_eq!(ParserFacts::from_tsv(&committed), facts);
    assert_eq!(facts.version(), "0.32.0");
    assert!(facts.tool_call_parsers().iter().any(|p| p == "hermes"));
    assert!(facts.reasoning_parsers().iter().any(|p| p == "deepseek_r1"));
    assert!(
        facts
            .config("CompilationConfig")
            .unwrap()
            .contains_key("mode")
    );
    assert!(
        facts
            .config("SpeculativeConfig")
            .unwrap()
            .contains_key("method")
    );
}
