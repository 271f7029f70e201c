"""Which visual channel a free phrase fills (palette, lighting, ...), read from its words.

The chain of concept labels its own phrases; persona and consensus phrases come unlabelled, and both the
consensus floor ("at least three channels") and the agent-health scorer need to know what a phrase paints.
A keyword reading is enough for that and, being deterministic, it does not depend on the model it judges.
A phrase with no channel word is left unlabelled (``None``), so it never inflates the channel count.
"""

from __future__ import annotations

from ed_agents.anchors import words
from ed_agents.state import VISUAL_CHANNELS

_KEYWORDS: dict[str, frozenset[str]] = {
    "color_palette": frozenset(
        """red reds orange yellow green greens blue blues purple violet pink grey gray greys black white
        brown gold golden silver crimson scarlet teal turquoise pastel pastels palette tones tone hues hue
        colours colors colour color colourful colorful saturated desaturated muted neon sepia monochrome
        amber beige ochre cream ivory magenta cyan rust-red maroon navy indigo emerald olive
        charcoal""".split()
    ),
    "lighting": frozenset(
        """light lights lit lighting glow glowing glows shadow shadows shade shadowy sunlight sunbeam
        sunbeams sunset sunrise dawn dusk twilight moonlight moonlit candlelight lamplight lamp lamps
        backlight backlit rays ray beam beams bright brightly dim dimly darkness gloom gloomy spotlight
        flicker flickering flickers glare glint sparkle sparkling luminous harsh chiaroscuro silhouetted
        illuminated neon-lit firelight""".split()
    ),
    "composition": frozenset(
        """close-up closeup close wide wide-angle angle angles view framing framed frame shot perspective
        centre center centered centred foreground background symmetry symmetrical lens camera overhead
        aerial tilted tilt portrait low-angle high-angle eye-level panorama panoramic cropped distant
        vast tiny small huge towering looming composition""".split()
    ),
    "expression_pose": frozenset(
        """face faces eyes eye smile smiling grin grinning frown frowning tears crying cry pose posture
        gesture hunched arms hands hand head staring stare glaring glare snarling snarl teeth bared
        leaning crouching crouched curled jumping leaping running mouth brow brows shoulders clenched
        fists fist trembling laughing laugh screaming scream wide-eyed slumped bowed kneeling dancing
        expression stance paws tail ears""".split()
    ),
    "environment": frozenset(
        """rain rainy raining snow snowy storm stormy fog foggy mist misty clouds cloud cloudy sky skies
        wind windy night morning evening afternoon midnight weather sunny winter autumn summer spring
        forest street streets sea ocean field fields dust dusty smoke smoky haze hazy drizzle thunder
        lightning puddles puddle mud waves horizon landscape city alley ruins garden meadow""".split()
    ),
    "material_texture": frozenset(
        """texture textures textured rough smooth wet glossy rust rusty cracked cracks peeling velvet
        metal metallic wood wooden stone stones glass moss mossy slime slimy fur furry silk silky paper
        worn dusty grimy grime sticky soft hard jagged splintered crumbling rotten rotting mouldy moldy
        gritty grainy polished shiny matte frosted weathered tattered""".split()
    ),
    "symbolic_objects": frozenset(
        """balloon balloons confetti flowers flower roses rose candle candles skull skulls chain chains
        cage clock clocks crow crows ravens raven feather feathers mask masks ribbon ribbons lantern
        lanterns wreath thorns thorn cross flag flags toy toys crown bones bone flies maggots heart
        hearts fireworks streamers""".split()
    ),
}


def channel_of(phrase: str) -> str | None:
    """The channel whose words ``phrase`` uses most (ties in ``VISUAL_CHANNELS`` order); None if none."""
    ws = words(phrase)
    best, best_hits = None, 0
    for channel in VISUAL_CHANNELS:
        hits = sum(w in _KEYWORDS[channel] for w in ws)
        if hits > best_hits:
            best, best_hits = channel, hits
    return best
