"""The IO manager between a Layer-1 transformer op and its load op (resource key `layer1_handover`): the
op's output is a manifest of chunk files this store owns. See docs/architecture.md, "The Layer-1 hand-over".
"""

from __future__ import annotations

import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from canvas_assets.errors import TransformationError

KEEP_DAYS = 7  # a run's hand-over files older than this are swept when a new transform starts


class Layer1HandOver(dg.ConfigurableIOManagerFactory):
    """The Layer-1 hand-over's configuration; `create_io_manager` gives the store the steps use."""

    base_dir: str | None = Field(
        default=None,
        description="Directory of the transform ops' chunk files and manifests (default: layer1_handover/ in "
        "the Dagster instance's storage directory). Must be shared by every process that runs a step.",
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> HandOverStore:
        if self.base_dir:
            return HandOverStore(Path(self.base_dir))
        if context.instance is None:
            raise dg.DagsterInvariantViolationError(
                "layer1_handover needs a Dagster instance for its default directory: give it base_dir"
            )
        return HandOverStore(Path(context.instance.storage_directory()) / "layer1_handover")


class HandOverStore(dg.IOManager):
    """The chunk files and manifests under one base directory (docs/architecture.md, "The Layer-1
    hand-over")."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def scratch(self, run_id: str, entity: str) -> Path:
        """An empty directory for the chunk files of `entity` in run `run_id` (what an earlier attempt of the
        step wrote there is removed). Old runs' leftovers are swept first."""
        self._sweep(keep=run_id)
        directory = self.base / run_id / "chunks" / entity
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return directory

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:  # the op skipped (profile switched the entity off): nothing to hand over
            return
        path = self._manifest(context.get_identifier())
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(path)  # a manifest is there whole or not at all

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if upstream is None:
            raise dg.DagsterInvariantViolationError("layer1_handover loads only the output of a transform op")
        path = self._manifest(upstream.get_identifier())
        try:
            with open(path, "rb") as f:
                staged = pickle.load(f)
        except FileNotFoundError:
            raise TransformationError(
                f"the transform's hand-over for {upstream.step_key} is gone from {path.parent} (its load committed and released it, or it was written by another "
                "machine or swept after "
                f"{KEEP_DAYS} days): materialize the asset again, its transform step included",
                stage="load",
            ) from None
        missing = [chunk.path for chunk in staged.chunks if not Path(chunk.path).is_file()]
        if missing:
            raise TransformationError(
                f"{len(missing)} of the transform's {len(staged.chunks)} chunk file(s) are gone (first: "
                f"{missing[0]}): materialize the asset again, its transform step included",
                stage="load",
            )
        staged.manifest = str(path)
        return staged

    def release(self, staged: Any) -> None:
        """Remove a loaded hand-over: its chunk files and its manifest."""
        shutil.rmtree(staged.directory, ignore_errors=True)
        if getattr(staged, "manifest", None):
            Path(staged.manifest).unlink(missing_ok=True)

    def _manifest(self, identifier: Any) -> Path:
        run_id, step_key, name, *rest = identifier
        return self.base / run_id / step_key / (".".join([name, *rest]) + ".manifest")

    def _sweep(self, keep: str) -> None:
        """Remove the directories of runs older than KEEP_DAYS (never `keep`'s)."""
        if not self.base.is_dir():
            return
        cutoff = time.time() - KEEP_DAYS * 86400
        for run_dir in self.base.iterdir():
            try:
                if run_dir.name != keep and run_dir.is_dir() and run_dir.stat().st_mtime < cutoff:
                    shutil.rmtree(run_dir, ignore_errors=True)
            except OSError:  # removed meanwhile by another run's sweep
                continue
