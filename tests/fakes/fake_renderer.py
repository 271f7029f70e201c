"""A renderer that records requests and writes 1-pixel PNGs: the graph's render stage without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from ed_common.emotions import Emotion
from ed_common.render_contract import RenderRequest, RenderResult, VisualPromptChoice
from ed_diffusion.images import contact_sheet, save_png_atomic


@dataclass
class FakeRenderer:
    """Implements ed_common.render_contract.Renderer."""

    requests: list[RenderRequest] = field(default_factory=list)
    retrievals: list[tuple[str, Emotion]] = field(default_factory=list)

    def retrieve(
        self, prompt: str, emotion: Emotion, *, top_k: int = 4, negative_vp: str = "none"
    ) -> VisualPromptChoice:
        self.retrievals.append((prompt, emotion))
        neg = Emotion.SADNESS if negative_vp != "none" else None
        return VisualPromptChoice(
            emotion=emotion,
            indices=list(range(top_k)),
            scores=[1.0] * top_k,
            negative_emotion=neg,
            negative_indices=list(range(top_k)) if neg else [],
        )

    def render(self, request: RenderRequest) -> RenderResult:
        self.requests.append(request)
        seeds = request.seeds
        images = [Image.new("RGB", (1, 1), (seed % 256, 0, 0)) for seed in seeds]
        paths = [
            save_png_atomic(im, request.out_dir / f"image_{i:02d}_seed{s}.png")
            for i, (im, s) in enumerate(zip(images, seeds, strict=True))
        ]
        sheet = (
            save_png_atomic(contact_sheet(images), request.out_dir / "contact_sheet.png")
            if len(images) > 1
            else None
        )
        assert request.visual_prompt is not None
        return RenderResult(
            images=paths,
            contact_sheet=sheet,
            seeds=seeds,
            visual_prompt=request.visual_prompt,
            model={"preset": "fake"},
            settings={"steps": 1},
            timings={"render_s": 0.0},
        )

    __call__ = render
