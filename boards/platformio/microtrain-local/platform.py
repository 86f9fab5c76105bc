"""microtrain-local: a PlatformIO platform without packages (the builder uses the system cross
compilers, builder/main.py). PlatformIO imports this file and takes the class named after the
platform ("microtrain-local" -> MicrotrainlocalPlatform)."""
from platformio.public import PlatformBase


class MicrotrainlocalPlatform(PlatformBase):
    def is_embedded(self):
        return True  # bare-metal images: size checks and the "Platform" target group apply
