"""The generate options a job may set, by the CLI's names, validated (strings from forms, CSV
manifests and JSON alike), and turned into the client's GenerateOptions."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lipsync_triton.errors import LipsyncError

Quad = tuple[int, int, int, int]


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pads: Quad = (0, 10, 0, 0)
    resize_factor: int = Field(1, ge=1, le=8)
    crop: Quad = (0, -1, 0, -1)
    box: Quad | None = None
    rotate: bool = False
    nosmooth: bool = False
    static: bool = False
    fps: float = Field(25.0, gt=0, le=120)
    face_select: str = Field("largest", max_length=40)
    hard_paste: bool = False
    detect_every: int = Field(2, ge=1, le=10)
    keyframe_every: int = Field(8, ge=0, le=64)

    @field_validator("pads", "crop", "box", mode="before")
    @classmethod
    def _quad(cls, value):
        if isinstance(value, str):
            parts = value.replace(",", " ").split()
            return tuple(parts) if parts else None
        return value

    def generate_kwargs(self) -> dict:
        data = self.model_dump()
        data["blend"] = not data.pop("hard_paste")
        return data

    @classmethod
    def parse(cls, fields: dict) -> "JobOptions":
        """Options from untrusted fields; a clear one-line error naming the field."""
        try:
            return cls(**{k: v for k, v in fields.items() if v not in (None, "")})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "options"
            raise LipsyncError(f"option {where}: {first.get('msg', 'invalid')}") from None


OPTION_NAMES = tuple(JobOptions.model_fields)
