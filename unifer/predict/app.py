"""``unifer app --model M [--port P]``: the browser demo, a Gradio app on 127.0.0.1 only.

Upload a photo or take one with the webcam; the app shows it with the faces boxed and labelled, and per face its
box, the detector's score, the label and the model's reasoning — exactly what ``unifer predict`` answers for the
same photo (the same ``Predictor``). Nothing leaves the machine: the server listens on loopback only, Gradio's
analytics and version check are off (``GRADIO_ANALYTICS_ENABLED=False``), no share link, and the theme uses the
system's fonts rather than fetching web fonts. Needs gradio (``pip install -e .[predict]``).
"""
from __future__ import annotations

import html
import os

from unifer.errors import UniferError
from unifer.predict.cli import add_model_arguments, build_predictor
from unifer.predict.core import annotate, load_photo, reasoning

HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def add_arguments(ap) -> None:
    add_model_arguments(ap)
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")


def import_gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before the import: gradio reads it then
    try:
        import gradio as gr
    except ImportError as e:
        raise UniferError(f"unifer app needs gradio (pip install -e .[predict]): {e}") from None
    return gr


def describe(answers) -> str:
    """The faces as Markdown (the model's text escaped: it is shown, never interpreted)."""
    if not answers:
        return "No face found. Try a photo with a frontal face, or `--whole-image`."
    lines = []
    for n, a in enumerate(answers, 1):
        score = "" if a.score is None else f", score {a.score:g}"
        lines.append(f"**Face {n}: {html.escape(a.label)}** (box {list(a.box)}{score})\n")
        text = html.escape(reasoning(a.response) or "(no reasoning)").replace("\n", "<br>")
        lines.append(f"<blockquote>{text}</blockquote>\n")
    return "\n".join(lines)


def build_app(predictor):
    """The Blocks app around one loaded Predictor (tests launch it in-process or via ``unifer app``)."""
    gr = import_gradio()

    def answer(path):
        if not path:
            return None, "Upload a photo or take one with the webcam."
        image = load_photo(path)
        answers = predictor.predict(image, os.path.basename(path))
        return annotate(image, answers), describe(answers)

    labels = ", ".join(predictor.fer_set.labels)
    with gr.Blocks(title="UniFER: your own photographs", analytics_enabled=False) as app:
        gr.Markdown(f"# UniFER — facial expressions in your photographs\nEach face found is asked the FERBench "
                    f"question with the labels: {labels}.")
        with gr.Row():
            photo = gr.Image(sources=["upload", "webcam"], type="filepath", image_mode=None, label="Photo",
                             elem_id="photo")
            shown = gr.Image(type="pil", label="Faces", interactive=False, elem_id="annotated")
        button = gr.Button("Answer", variant="primary", elem_id="answer")
        faces = gr.Markdown(elem_id="faces")
        button.click(answer, inputs=photo, outputs=[shown, faces])
    return app


def launch(app, port: int, block: bool = True):
    """Serve on 127.0.0.1:port; the theme uses the system's fonts (Gradio's default fetches web fonts)."""
    gr = import_gradio()
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
    return app.launch(server_name=HOST, server_port=port, share=False, inbrowser=False, show_error=True,
                      quiet=True, theme=theme, prevent_thread_lock=not block)


def run(args) -> int:
    import_gradio()  # fail before the model loads
    predictor = build_predictor(args)
    print(f"unifer app: http://{HOST}:{args.port}/ (Ctrl-C stops it)", flush=True)
    try:
        launch(build_app(predictor), args.port)
    finally:
        predictor.engine.close()
    return 0
