"""Small GAN and VAE models on the same images as the diffusion jobs, and a quality score that needs no download.

Imported only where a job runs (torch, scikit-learn): ``workers.kinds.gan_train``, ``vae_train`` and
``generative_sample`` stay torch-free for the scheduler.
"""
