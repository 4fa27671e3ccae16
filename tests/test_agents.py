"""Agents: one prompt file each, with optional front matter; looked up by name, never by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from piagent.agents import load_agents
from piagent.exceptions import AgentDefinitionError, AgentNotFound, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def _load(folder: Path, default: str = "general"):  # type: ignore[no-untyped-def]
    return load_agents(folder, default, "default-model", 20)


def test_front_matter_sets_description_model_options_and_memory(prompts_dir: Path) -> None:
    agents = _load(prompts_dir)
    pirate = agents["pirate"]
    assert pirate.description == "Talks like a pirate."
    assert pirate.model == "pirate-model"
    assert pirate.options == {"temperature": 0.1, "num_ctx": 512}
    assert pirate.max_turns == 4
    assert pirate.system_prompt == "You are a pirate."


def test_a_file_without_front_matter_is_all_prompt_with_the_defaults(prompts_dir: Path) -> None:
    general = _load(prompts_dir)["general"]
    assert (general.model, general.max_turns, general.options) == ("default-model", 20, {})
    assert general.system_prompt == "You are a test assistant."


def test_an_agent_cannot_keep_more_turns_than_the_server_allows(tmp_path: Path) -> None:
    (tmp_path / "general.md").write_text("---\nmax_turns: 500\n---\nHi")
    assert _load(tmp_path)["general"].max_turns == 20


def test_txt_files_and_md_files_are_agents_other_files_are_not(tmp_path: Path) -> None:
    (tmp_path / "general.txt").write_text("plain")
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / ".hidden.md").write_text("x")
    assert list(_load(tmp_path)) == ["general"]


@pytest.mark.parametrize(
    ("filename", "text", "error"),
    [
        pytest.param("Bad Name.md", "x", "agent names are lowercase", id="bad-name"),
        pytest.param("general.md", "---\ndescription: x\n", "never closed", id="unclosed"),
        pytest.param("general.md", "---\ncolour: red\n---\nx", "unknown field `colour`", id="unknown-key"),
        pytest.param("general.md", "---\nmax_turns: many\n---\nx", "$.max_turns", id="wrong-type"),
        pytest.param("general.md", "---\njust words\n---\nx", "expected 'key: value'", id="not-key-value"),
        pytest.param("general.md", "---\nprovider: claude\n---\nx", "$.provider", id="unknown-provider"),
        pytest.param("general.md", "---\nurl: localhost:8080\n---\nx", "an http:// or https:// URL", id="bad-url"),
        pytest.param("general.md", "---\napi_key_env: sk-123\n---\nx", "$.api_key_env", id="key-not-a-name"),
    ],
)
def test_a_broken_prompt_file_stops_start_up_naming_the_file(
    tmp_path: Path, filename: str, text: str, error: str
) -> None:
    (tmp_path / "ok.md").write_text("fine")
    (tmp_path / filename).write_text(text)
    with pytest.raises(AgentDefinitionError) as caught:
        _load(tmp_path, default="ok")
    assert filename in caught.value.message
    assert error in caught.value.message


def test_front_matter_sets_provider_urls_and_the_api_key_variable(tmp_path: Path) -> None:
    (tmp_path / "general.md").write_text(
        "---\nprovider: openai\nurl: http://a:8080/, http://b:8080\napi_key_env: LLAMA_KEY\n---\nHi"
    )
    (tmp_path / "plain.md").write_text("Hi")
    agents = load_agents(tmp_path, "general", "m", 20, default_provider="openai")
    general = agents["general"]
    assert (general.provider, general.url, general.api_key_env) == (
        "openai",
        "http://a:8080,http://b:8080",
        "LLAMA_KEY",
    )
    plain = agents["plain"]
    assert (plain.provider, plain.url, plain.api_key_env) == ("openai", "", "")
    assert _load(tmp_path)["plain"].provider == "ollama"


def test_trailing_comments_in_front_matter_are_dropped(tmp_path: Path) -> None:
    (tmp_path / "general.md").write_text(
        "---\nmodel: qwen2.5:0.5b   # default: PIAGENT_MODEL\noptions:   # any Ollama option\n"
        '  temperature: 0.2  # low\n  stop: ["a #1"]\nprovider: openai # here\napi_key_env: KEY  # from env\n---\nHi'
    )
    agent = _load(tmp_path)["general"]
    assert (agent.model, agent.provider, agent.api_key_env) == ("qwen2.5:0.5b", "openai", "KEY")
    assert agent.options == {"temperature": 0.2, "stop": ["a #1"]}


def test_two_files_for_one_agent_are_refused(tmp_path: Path) -> None:
    (tmp_path / "general.md").write_text("a")
    (tmp_path / "general.txt").write_text("b")
    with pytest.raises(AgentDefinitionError, match="a second file"):
        _load(tmp_path)


def test_the_default_agent_must_exist(prompts_dir: Path) -> None:
    with pytest.raises(SettingsError, match="PIAGENT_DEFAULT_AGENT='missing' is not allowed: expected one of general"):
        _load(prompts_dir, default="missing")


def test_an_empty_or_missing_folder_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"holds no \.md or \.txt agent"):
        _load(tmp_path)
    with pytest.raises(SettingsError, match="expected a folder"):
        _load(tmp_path / "absent")


def test_resolve_finds_by_name_and_lists_the_known_ones_otherwise(prompts_dir: Path) -> None:
    agents = _load(prompts_dir)
    assert agents.resolve(None).name == "general"
    assert agents.resolve("pirate").name == "pirate"
    with pytest.raises(AgentNotFound, match="known agents: general, pirate"):
        agents.resolve("../general")


def test_the_shipped_agents_load() -> None:
    agents = load_agents(ROOT / "prompts", "general", "m", 20)
    assert {"general", "shell", "pi"} <= set(agents)
    assert agents["pi"].tools == ("system_status", "calculator", "disk_usage")
    assert all(agent.description and agent.system_prompt for agent in agents.values())
