"""The built-in VSP/VSC pairs, Integration Components and VID services.

Each registers through the same ``winhv`` entry point and hooks a third-party package uses;
nothing here has a private door into the framework.
"""
