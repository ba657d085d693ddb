"""`slimtune methods`: what each method does and which `--set` options it takes."""


def register(sub) -> None:
    p = sub.add_parser("methods", help="list PEFT methods and their options",
                       description="List every registered PEFT method with its options and defaults.")
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.methods.registry import available_methods, option_help

    for name, cls in available_methods().items():
        merge = "mergeable" if cls.mergeable else "not mergeable"
        peft = f"; peft {cls.peft_mapping.peft_type}" if cls.peft_mapping else ""
        print(f"{name:<12} {cls.summary}  [default lr {cls.default_lr:g}; {merge}{peft}]")
        for option, default, text in option_help(cls):
            print(f"    --set {f'{option}={default}':<24} {text}")
    return 0
