"""cupy.cuda.compiler, simulated: the error of a kernel that does not compile."""


class CompileException(Exception):
    """A kernel failed to compile; the message holds the compiler's output."""

    def __init__(self, msg, source="", name="", options=()):
        super().__init__(msg)
        self._msg = msg
        self.source = source
        self.name = name
        self.options = options

    def get_message(self):
        return self._msg
