"""`slimtune methods`: what each method does and which `--set` options it takes."""


def register(sub) -> None:
    p = sub.add_parser("methods", help="list PEFT methods and their options",
                       description="List every registered PEFT method with its options and defaults.")
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.methods.registry import available_methods, option_help

    for name, cls in available_methods().items():
        merge = "mergeable" if cls.mergeable else "not mergeable"
        print(f"{name:<12} {cls.summary}  [default lr {cls.default_lr:g}; {merge}]")
        for option, default, text in option_help(cls):
            print(f"    --set {f'{option}={default}':<24} {text}")
    return 0
