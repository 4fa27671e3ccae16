"""Agents: one prompt file each, read once at start-up into a registry looked up by name."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from piagent.exceptions import AgentDefinitionError, AgentNotFound, SettingsError, clip
from piagent.schemas import whole_string
from piagent.settings import parse_urls

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SUFFIXES = (".md", ".txt")
OptionValue = float | int | bool | str | list[str]


class Agent(msgspec.Struct, frozen=True, kw_only=True):
    """A named system prompt with its model, sampling options and memory depth."""

    name: str
    description: str
    model: str
    system_prompt: str
    options: dict[str, OptionValue]
    max_turns: int
    provider: str = "ollama"
    # Comma-separated upstream URLs; "" means the settings' URLs for `provider`.
    url: str = ""
    # The name of an environment variable holding the upstream's API key (the key itself never sits in a file).
    api_key_env: str = ""
    # The tools piagent runs for this agent (built-in or command tools, by name), and the agents it may ask.
    tools: tuple[str, ...] = ()
    delegates: tuple[str, ...] = ()
    mcp: tuple[str, ...] = ()  # MCP servers (PIAGENT_MCP_FILE) whose tools it may use
    # This agent's own tool-loop limits, over the settings' (only the keys it names).
    tool_limits: dict[str, float] = {}


def tool_names(agent: Agent) -> list[str]:
    """What an agent acts with, as `piagent tools` and `piagent check` list it."""
    names = [*agent.tools, *(f"mcp:{server}" for server in agent.mcp)]
    if agent.delegates:
        names.append("ask_agent (" + ", ".join(agent.delegates) + ")")
    return names


class _FrontMatter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    description: str = ""
    model: str | None = None
    max_turns: Annotated[int, msgspec.Meta(ge=2, le=1000)] | None = None
    options: dict[str, OptionValue] = {}
    provider: Literal["ollama", "openai"] | None = None
    url: str | None = None
    api_key_env: Annotated[str, whole_string(r"[A-Za-z_][A-Za-z0-9_]*")] | None = None
    tools: list[Annotated[str, whole_string(r"[A-Za-z0-9_-]{1,64}")]] = []
    delegates: list[Annotated[str, whole_string(r"[a-z0-9][a-z0-9_-]{0,63}")]] = []
    mcp: list[Annotated[str, whole_string(r"[A-Za-z0-9_-]{1,64}")]] = []
    tool_limits: _ToolLimits | None = None


class _ToolLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """An agent's `tool_limits:` block: any of the loop's limits, each within the settings' ranges."""

    max_steps: Annotated[int, msgspec.Meta(ge=1, le=50)] | None = None
    max_calls: Annotated[int, msgspec.Meta(ge=1, le=32)] | None = None
    reply_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] | None = None
    output_max_bytes: Annotated[int, msgspec.Meta(ge=256, le=1024 * 1024)] | None = None


class Agents(Mapping[str, Agent]):
    """The read-only registry of agents, with the default agent's name."""

    def __init__(self, agents: dict[str, Agent], default: str) -> None:
        if default not in agents:
            known = ", ".join(sorted(agents))
            raise SettingsError(f"PIAGENT_DEFAULT_AGENT={default!r} is not allowed: expected one of {known}")
        self._agents = agents
        self.default = default

    def __getitem__(self, name: str) -> Agent:
        return self._agents[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def resolve(self, name: str | None) -> Agent:
        """The agent called `name` (the default for None), or `AgentNotFound` listing the known ones."""
        name = self.default if name is None else name
        agent = self._agents.get(name)
        if agent is None:
            raise AgentNotFound(f"no agent named {clip(name)}; known agents: {', '.join(sorted(self._agents))}")
        return agent


def _parse_value(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        pass
    if text.startswith("[") and text.endswith("]"):  # YAML's flow list of plain words: [clock, calculator]
        return [item.strip().strip("'\"") for item in text[1:-1].split(",") if item.strip()]
    return text


def _strip_comment(value: str) -> str:
    """Drop a trailing ` # comment`, as YAML does (the README's examples use them); JSON values keep theirs."""
    if value.startswith("#"):
        return ""
    if value[:1] in ('"', "[", "{"):
        return value
    index = value.find(" #")
    return value[:index].rstrip() if index != -1 else value


def _split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    """Split a `---` block of `key: value` lines (and an indented `options:` block) from the prompt."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text.strip()
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise AgentDefinitionError(f"{path}: the front matter opened by '---' is never closed") from None
    meta: dict[str, Any] = {}
    nested: dict[str, Any] | None = None
    for number, line in enumerate(lines[1:end], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.strip().partition(":")
        if not sep or not key.strip():
            raise AgentDefinitionError(f"{path}:{number}: expected 'key: value', got {line.strip()!r}")
        key, value = key.strip(), _strip_comment(value.strip())
        if line[0].isspace():
            if nested is None:
                raise AgentDefinitionError(f"{path}:{number}: indented line outside a block")
            nested[key] = _parse_value(value)
        elif not value:
            nested = meta[key] = {}
        else:
            nested = None
            meta[key] = _parse_value(value) if key != "description" else value
    return meta, "\n".join(lines[end + 1 :]).strip()


def load_agent(path: Path, default_model: str, default_max_turns: int, default_provider: str = "ollama") -> Agent:
    """Read one prompt file into an Agent; any problem raises `AgentDefinitionError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentDefinitionError(f"{path}: cannot be read: {exc}") from exc
    raw, prompt = _split_front_matter(text, path)
    try:
        meta = msgspec.convert(raw, _FrontMatter)
    except msgspec.ValidationError as exc:
        raise AgentDefinitionError(f"{path}: front matter: {exc}") from exc
    url = ""
    if meta.url is not None:
        try:
            url = parse_urls(meta.url)
        except ValueError as exc:
            raise AgentDefinitionError(
                f"{path}: front matter: url {meta.url!r} is not allowed: expected {exc}"
            ) from exc
    return Agent(
        name=path.stem,
        description=meta.description,
        model=meta.model or default_model,
        system_prompt=prompt,
        options=meta.options,
        max_turns=min(meta.max_turns or default_max_turns, default_max_turns),
        provider=meta.provider or default_provider,
        url=url,
        api_key_env=meta.api_key_env or "",
        tools=tuple(dict.fromkeys(meta.tools)),
        delegates=tuple(dict.fromkeys(meta.delegates)),
        mcp=tuple(dict.fromkeys(meta.mcp)),
        tool_limits={}
        if meta.tool_limits is None
        else {k: v for k, v in msgspec.structs.asdict(meta.tool_limits).items() if v is not None},
    )


def load_agents(
    prompts_dir: str | Path,
    default: str,
    default_model: str,
    default_max_turns: int,
    default_provider: str = "ollama",
) -> Agents:
    """Every `<name>.md` / `<name>.txt` in `prompts_dir` as an agent; names are `[a-z0-9][a-z0-9_-]*`."""
    folder = Path(prompts_dir)
    if not folder.is_dir():
        raise SettingsError(f"PIAGENT_PROMPTS_DIR={str(prompts_dir)!r} is not allowed: expected a folder of agents")
    agents: dict[str, Agent] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in _SUFFIXES or path.name.startswith("."):
            continue
        if not _NAME.fullmatch(path.stem):
            raise AgentDefinitionError(f"{path}: agent names are lowercase letters, digits, '-' and '_'")
        if path.stem in agents:
            raise AgentDefinitionError(f"{path}: a second file for agent {path.stem!r}")
        agents[path.stem] = load_agent(path, default_model, default_max_turns, default_provider)
    if not agents:
        raise SettingsError(f"PIAGENT_PROMPTS_DIR={str(prompts_dir)!r} is not allowed: it holds no .md or .txt agent")
    for agent in agents.values():
        unknown = [name for name in agent.delegates if name not in agents or name == agent.name]
        if unknown:
            raise AgentDefinitionError(
                f"{folder / agent.name}: front matter: delegates {unknown!r} are not other agents; "
                f"known agents: {', '.join(sorted(agents))}"
            )
    return Agents(agents, default)
